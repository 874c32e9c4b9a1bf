// testfleet dashboard: live updates over socket.io (as a `browser` client),
// the log tail, and the action buttons. No build step, no framework.
(function () {
  'use strict';
  var state = { loadedAt: Date.now(), connected: false, updates: 0, refreshes: 0 };
  window.tfDashboard = state;
  var statusEl = document.getElementById('live-status');
  var watchEl = document.querySelector('[data-watch]');
  var watch = watchEl ? watchEl.getAttribute('data-watch') : 'none';
  var watchMatch = /^(job|task):(\d+)$/.exec(watch);
  var permalink = document.getElementById('permalink');
  if (permalink) permalink.href = location.href;

  function say(text) { if (statusEl) statusEl.textContent = text; }

  // ----- fragments: the page's live parts fetched again --------------------
  var timer = null, busy = false, again = false;
  function schedule() {
    if (timer) return;
    timer = setTimeout(function () { timer = null; refresh(); }, 200);
  }
  function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    fetch(location.href, { headers: { 'X-Fragment': '1' }, credentials: 'same-origin' })
      .then(function (r) {
        if (!r.ok) throw new Error('HTTP ' + r.status);
        return r.text();
      })
      .then(function (html) {
        var t = document.createElement('template');
        t.innerHTML = html;
        t.content.querySelectorAll('[data-live-part]').forEach(function (fresh) {
          var old = fresh.id && document.getElementById(fresh.id);
          if (old) old.replaceWith(fresh);
        });
        state.refreshes++;
        document.dispatchEvent(new CustomEvent('tf:refreshed'));
      })
      .catch(function (e) { say('update failed (' + e.message + '); retrying on the next change'); })
      .then(function () {
        busy = false;
        if (again) { again = false; schedule(); }
      });
  }

  // ----- socket.io v5 over an Engine.IO v4 websocket ------------------------
  var delay = 500;
  function connect() {
    if (watch === 'none') return;
    var scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    var ws;
    try {
      ws = new WebSocket(scheme + '//' + location.host + '/socket.io/?EIO=4&transport=websocket');
    } catch (e) {
      say('not live: ' + e.message);
      return;
    }
    ws.onmessage = function (message) {
      var data = message.data;
      if (typeof data !== 'string' || data.length === 0) return;
      var kind = data.charAt(0);
      if (kind === '0') {
        // With reads closed, the token this tab was given (if any) lets the
        // live updates in; HTTP authentication rides on the upgrade itself.
        var hello = { clientType: 'browser' };
        var token = sessionStorage.getItem('testfleet-token');
        if (token) hello.token = token;
        ws.send('40' + JSON.stringify(hello));
      } else if (kind === '2') {
        ws.send('3');
      } else if (kind === '4') {
        var packet = data.charAt(1);
        if (packet === '0') {
          delay = 500;
          state.connected = true;
          say('live');
          // Whatever changed while connecting.
          schedule();
          if (watchMatch && watchMatch[1] === 'task') tailLog();
        } else if (packet === '2') {
          var start = data.indexOf('[');
          if (start < 0) return;
          try {
            var args = JSON.parse(data.slice(start));
            onEvent(args[0], args[1]);
          } catch (e) { /* not an event this page knows */ }
        } else if (packet === '4') {
          say('not live: the server refused the connection');
        }
      }
    };
    ws.onclose = function () {
      state.connected = false;
      say('reconnecting…');
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 10000);
    };
  }

  function onEvent(name, update) {
    state.updates++;
    if (name === 'agentData') {
      if (watch === 'fleet') schedule();
      return;
    }
    if (name !== 'tf:update' || !update) return;
    if (watch === 'all' || watch === 'fleet') {
      if (update.kind !== 'log') schedule();
      return;
    }
    if (!watchMatch) return;
    var id = Number(watchMatch[2]);
    if (watchMatch[1] === 'job' && update.job_id === id && update.kind !== 'log') schedule();
    if (watchMatch[1] === 'task' && update.task_id === id) {
      if (update.kind === 'started') resetLog();
      if (update.kind !== 'log') schedule();
      tailLog();
    }
  }

  // ----- the log tail ----------------------------------------------------------
  var log = document.getElementById('log');
  var follow = document.getElementById('log-follow');
  var logOffset = 0, logAttempt = null, logBusy = false, logAgain = false;
  function resetLog() {
    logOffset = 0;
    logAttempt = null;
    if (log) log.textContent = '';
  }
  function tailLog() {
    if (!log) return;
    if (logBusy) { logAgain = true; return; }
    logBusy = true;
    var url = '/api/v1/tasks/' + log.getAttribute('data-task') + '/log?offset=' + logOffset +
      (logAttempt ? '&attempt=' + logAttempt : '');
    fetch(url, { credentials: 'same-origin' })
      .then(function (r) {
        if (!r.ok) throw new Error('HTTP ' + r.status);
        return r.json();
      })
      .then(function (slice) {
        if (slice.attempt_id && logAttempt && slice.attempt_id !== logAttempt) resetLog();
        if (slice.attempt_id) logAttempt = slice.attempt_id;
        if (slice.data) {
          log.appendChild(document.createTextNode(slice.data));
          if (!follow || follow.checked) log.scrollTop = log.scrollHeight;
        }
        logOffset = slice.next_offset;
        log.setAttribute('data-offset', String(logOffset));
        log.setAttribute('data-complete', String(slice.complete));
        // A long log arrives in slices: the next one right away.
        if (slice.data && slice.data.length > 0 && !slice.complete) logAgain = true;
      })
      .catch(function (e) { say('log tail failed (' + e.message + ')'); })
      .then(function () {
        logBusy = false;
        if (logAgain) { logAgain = false; tailLog(); }
      });
  }
  if (log) tailLog();

  // ----- actions (cancel, retry) and copy buttons ----------------------------
  function post(url, token) {
    var headers = {};
    if (token) headers.Authorization = 'Bearer ' + token;
    return fetch(url, { method: 'POST', headers: headers, credentials: 'same-origin' });
  }
  document.addEventListener('click', function (event) {
    var copy = event.target.closest && event.target.closest('[data-copy]');
    if (copy) {
      var source = document.getElementById(copy.getAttribute('data-copy'));
      if (source && navigator.clipboard) {
        navigator.clipboard.writeText(source.textContent).then(function () { copy.textContent = 'Copied'; },
          function () { copy.textContent = 'Select and copy'; });
      }
      return;
    }
    var button = event.target.closest && event.target.closest('[data-post]');
    if (!button) return;
    var question = button.getAttribute('data-confirm');
    if (question && !window.confirm(question)) return;
    var url = button.getAttribute('data-post');
    var out = document.getElementById('action-status');
    var token = sessionStorage.getItem('testfleet-token');
    button.disabled = true;
    post(url, token)
      .then(function (r) {
        if (r.status !== 401) return r;
        // Reading needed no login, this action does: ask for a token.
        var given = window.prompt('This action needs a login. API token (kept for this tab only):');
        if (!given) return r;
        sessionStorage.setItem('testfleet-token', given);
        return post(url, given);
      })
      .then(function (r) {
        return r.json().then(function (body) {
          if (out) out.textContent = r.ok ? 'Done.' : ('Refused: ' + (body.error || r.status));
          if (r.ok) schedule();
        }, function () {
          if (out) out.textContent = r.ok ? 'Done.' : ('Refused: HTTP ' + r.status);
        });
      })
      .catch(function (e) { if (out) out.textContent = 'Failed: ' + e.message; })
      .then(function () { button.disabled = false; });
  });

  connect();
})();
