"""The real ResultsDB client (PyPI `resultsdb-api`) against testfleet's ResultsDB API v2.0.

Usage: resultsdb_client.py API_URL   (e.g. http://127.0.0.1:8080/api/v2.0)
Creates testcases, groups and results, reads them back, lists with filters and
paging, asks for the latest results. Prints OK on success; fails with an assertion.
"""
import sys

import requests
import resultsdb_api

url = sys.argv[1].rstrip("/")
api = resultsdb_api.ResultsDBapi(url, max_retries=0)

health = requests.get(url + "/healthcheck").json()
assert health["message"] == "Health check OK", health

tc = api.create_testcase("dist.rpmlint", ref_url="https://example.org/rpmlint")
assert tc["name"] == "dist.rpmlint" and tc["href"].endswith("/testcases/dist.rpmlint"), tc
assert api.get_testcase("dist.rpmlint")["ref_url"] == "https://example.org/rpmlint"
api.create_testcase("dist.depcheck")

group = api.create_group(description="taskotron job 1", ref_url="https://example.org/job/1")
uuid = group["uuid"]
assert api.get_group(uuid)["description"] == "taskotron job 1"
assert any(g["uuid"] == uuid for g in api.get_groups(description_like="taskotron*")["data"])

created = []
for i, (outcome, item) in enumerate(
    [("PASSED", "xchat-0.5-1.fc20"), ("FAILED", "foobar-1.2-3.fc20"), ("INFO", "f20-updates"),
     ("NEEDS_INSPECTION", "foo-1.2-3.fc20"), ("PASSED", "foo-1.2-3.fc20")]
):
    r = api.create_result(outcome, "dist.rpmlint" if i % 2 == 0 else "dist.depcheck",
                          groups=[uuid], note="note %d" % i, ref_url="https://example.org/log/%d" % i,
                          item=item, type="koji_build", arch=["x86_64", "i386"])
    assert r["outcome"] == outcome and r["data"]["item"] == [item], r
    assert r["data"]["arch"] == ["x86_64", "i386"], r
    created.append(r)

got = api.get_result(created[1]["id"])
assert got["testcase"]["name"] == "dist.depcheck" and got["groups"] == [uuid], got
assert got["note"] == "note 1"

# Filters.
mine = api.get_results(groups=[uuid], limit=100)["data"]
assert len(mine) == 5, mine
assert [r["id"] for r in mine] == sorted((r["id"] for r in created), reverse=True), "newest first"
failed = api.get_results(outcome="FAILED", groups=[uuid])["data"]
assert [r["id"] for r in failed] == [created[1]["id"]], failed
by_tc = api.get_results(testcases=["dist.depcheck"], groups=[uuid])["data"]
assert len(by_tc) == 2, by_tc
like = api.get_results(testcases_like="dist.rpm*", groups=[uuid])["data"]
assert len(like) == 3, like
items = api.get_results(item="foo-1.2-3.fc20")["data"]
assert len(items) == 2, items
items_like = api.get_results(raw_params={"item:like": "foo*"}, groups=[uuid])["data"]
assert len(items_like) == 3, items_like
asc = api.get_results(groups=[uuid], raw_params={"_sort": "asc:submit_time"})["data"]
assert asc[0]["id"] == created[0]["id"], asc
assert api.get_results(since="2000-01-01T00:00:00", groups=[uuid])["data"], "since"

# Paging with prev/next URLs.
page0 = api.get_results(groups=[uuid], limit=2)
assert page0["prev"] is None and page0["next"], page0
page1 = requests.get(page0["next"]).json()
assert page1["prev"] and page1["next"] and len(page1["data"]) == 2, page1
page2 = requests.get(page1["next"]).json()
assert page2["next"] is None and len(page2["data"]) == 1, page2
seen = [r["id"] for r in page0["data"] + page1["data"] + page2["data"]]
assert sorted(seen) == sorted(r["id"] for r in created), seen

# Latest per testcase, and per testcase and item.
latest = requests.get(url + "/results/latest", params={"groups": uuid}).json()["data"]
assert sorted(r["id"] for r in latest) == sorted([created[4]["id"], created[3]["id"]]), latest
distinct = requests.get(url + "/results/latest",
                        params={"groups": uuid, "_distinct_on": "item"}).json()["data"]
# Every (testcase, item) pair is distinct here: all five are the latest of their kind.
assert len(distinct) == 5, distinct

# Errors carry a message, which the client surfaces.
try:
    api.create_result("MAYBE", "dist.rpmlint")
    raise AssertionError("a bad outcome was accepted")
except resultsdb_api.ResultsDBapiException as e:
    assert "outcome must be one of" in e.message, e.message
try:
    api.get_result(999999)
    raise AssertionError("a missing result was found")
except resultsdb_api.ResultsDBapiException as e:
    assert "not found" in e.message.lower(), e.message

# testfleet's own results are there too when a job ran (the driver may pass its group).
if len(sys.argv) > 2:
    tf = api.get_results(groups=[sys.argv[2]])["data"]
    assert tf and all("attempt_id" in r["data"] for r in tf), tf

print("OK")
