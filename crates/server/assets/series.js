// testfleet dashboard: one benchmark series drawn with uPlot, with the
// noise band of its current level and the change points marked. The drawn
// change points are written to the plot's data-drawn-changes attribute.
(function () {
  'use strict';
  var box = document.getElementById('plot');
  var source = document.getElementById('plot-data');
  if (!window.uPlot) return;
  window.tfDrawSeries = draw;
  if (box && source) draw(box, JSON.parse(source.textContent));

  // Draws series `d` (see PlotData in dashboard/series.rs) into `box`.
  function draw(box, d) {
    var styles = getComputedStyle(document.documentElement);
    function color(name, fallback) { return (styles.getPropertyValue(name) || fallback).trim(); }
    var line = color('--accent', '#1a5fb4');
    var band = color('--band', 'rgba(26,95,180,.12)');
    var mark = color('--fail', '#b3261e');
    var fg = color('--fg', '#222');
    var grid = color('--line', '#ddd');

    function decorate(u) {
      var ctx = u.ctx;
      var left = u.bbox.left, top = u.bbox.top, width = u.bbox.width, height = u.bbox.height;
      ctx.save();
      if (d.band) {
        var y0 = u.valToPos(d.band[1], 'y', true), y1 = u.valToPos(d.band[0], 'y', true);
        ctx.fillStyle = band;
        ctx.fillRect(left, Math.max(top, y0), width, Math.min(top + height, y1) - Math.max(top, y0));
      }
      var drawn = [];
      ctx.strokeStyle = mark;
      ctx.lineWidth = 2 * devicePixelRatio;
      ctx.setLineDash([6 * devicePixelRatio, 4 * devicePixelRatio]);
      d.changes.forEach(function (i) {
        if (i < 0 || i >= d.x.length) return;
        var x = u.valToPos(d.x[i], 'x', true);
        ctx.beginPath();
        ctx.moveTo(x, top);
        ctx.lineTo(x, top + height);
        ctx.stroke();
        drawn.push(i);
      });
      ctx.restore();
      box.setAttribute('data-drawn-changes', drawn.join(','));
      box.setAttribute('data-drawn', 'true');
    }

    function size() {
      return { width: Math.max(280, box.clientWidth), height: Math.max(240, Math.min(420, window.innerHeight * 0.5)) };
    }
    var started = performance.now();
    var opts = {
      width: size().width,
      height: size().height,
      scales: { x: { time: d.time } },
      axes: [
        { stroke: fg, grid: { stroke: grid } },
        { stroke: fg, grid: { stroke: grid }, label: d.unit }
      ],
      series: [
        { label: d.time ? 'time' : 'point' },
        { label: 'value', stroke: line, width: 1, points: { show: d.x.length <= 2000, size: 4 } }
      ],
      hooks: { draw: [decorate] }
    };
    var plot = new window.uPlot(opts, [d.x, d.y], box);
    box.setAttribute('data-draw-ms', String(Math.round(performance.now() - started)));
    // Clicking a point opens the run that measured it.
    plot.over.addEventListener('click', function () {
      var i = plot.cursor.idx;
      if (i != null && d.task[i]) location.href = '/tasks/' + d.task[i];
    });
    window.addEventListener('resize', function () { plot.setSize(size()); });
    return plot;
  }
})();
