"""`cellpaint status`: a folder's pairs as the stack sees them, on moto: done, failed, pending,
and a re-upload counting as pending again."""
from __future__ import annotations

import pytest

from shared.pipeline.status import first_unanswered, folder_status

from .conftest import BUCKET, Context, encode, good_pair, run_jobs, upload


def ingest(stack, key: str, data: bytes) -> None:
    stack.ingest.lambda_handler(upload(stack, key, data), Context())


def test_a_folder_counts_each_pair_once(stack, inpainter, capsys):
    from cellpaint.cli import main

    image, mask = good_pair()
    for name in ("a", "b"):
        ingest(stack, f"incoming/lab1/day1/{name}.png", image)
        ingest(stack, f"incoming/lab1/day1/{name}.mask.png", mask)
    ingest(stack, "incoming/lab1/day1/bad.png", image)
    ingest(stack, "incoming/lab1/day1/bad.mask.png", encode(__import__("numpy").zeros((48, 64), "uint8")))  # all black
    ingest(stack, "incoming/lab1/day1/half.png", image)  # its mask never comes
    ingest(stack, "incoming/lab1/day2/other.png", image)  # another folder
    st = folder_status(stack.s3, BUCKET, "lab1/day1", stack.batch)
    assert (st.count("done"), st.count("failed"), st.count("pending")) == (0, 1, 3)
    assert first_unanswered(stack.s3, BUCKET, "lab1/day1") == "lab1/day1/a"
    run_jobs(stack, inpainter)
    assert first_unanswered(stack.s3, BUCKET, "lab1/day1/") == "lab1/day1/half"  # its mask never came
    assert first_unanswered(stack.s3, BUCKET, "lab1/day1/", start="lab1/day1/b") == "lab1/day1/half"
    st = folder_status(stack.s3, BUCKET, "lab1/day1", stack.batch)
    assert st.line() == "2 done, 1 failed, 1 pending" and len(st.pairs) == 4
    assert {p.pair: p.detail for p in st.pairs if p.state != "done"} == {
        "lab1/day1/bad": next(p.detail for p in st.pairs if p.pair == "lab1/day1/bad"), "lab1/day1/half": "waiting for its mask"}
    assert "all black" in next(p.detail for p in st.pairs if p.pair == "lab1/day1/bad")
    with pytest.raises(SystemExit) as end:
        main(["status", f"s3://{BUCKET}/incoming/lab1/day1/"])
    assert end.value.code == 3 and capsys.readouterr().out.splitlines()[-1] == "2 done, 1 failed, 1 pending"
    # a new upload of a done pair is pending again until its own result exists
    stack.s3.put_object(Bucket=BUCKET, Key="incoming/lab1/day1/a.png", Body=image)
    assert folder_status(stack.s3, BUCKET, "lab1/day1").line() == "1 done, 1 failed, 2 pending"
    # the listings alone see a's old result: a lower bound of pending, never more than it
    assert first_unanswered(stack.s3, BUCKET, "lab1/day1") == "lab1/day1/half"


def test_a_finished_folder_exits_0_and_a_failed_one_1(stack, inpainter, capsys):
    from cellpaint.cli import main

    image, mask = good_pair()
    ingest(stack, "incoming/f/a.png", image)
    ingest(stack, "incoming/f/a.mask.png", mask)
    run_jobs(stack, inpainter)
    assert main(["status", f"s3://{BUCKET}/incoming/f/"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "1 done, 0 failed, 0 pending"
    ingest(stack, "incoming/g/a.png", image)
    ingest(stack, "incoming/g/a.mask.png", encode(__import__("numpy").zeros((48, 64), "uint8")))
    with pytest.raises(SystemExit) as end:
        main(["status", f"s3://{BUCKET}/incoming/g/", "--wait", "--interval", "0.1"])
    assert end.value.code == 1
    assert main(["status", "s3://b/results/x/"]) == 2  # not a folder of uploads


def test_a_watch_resumes_where_it_stopped_and_reads_only_from_there(stack):
    """A digest check each minute of a 10,000-pair folder read the folder's whole listing each
    time: it now reads from the pair the last check stopped at, and a pair whose halves sort apart
    ('p.n.mask.png' and 'p.n.png' between 'p.mask.png' and 'p.png') is still found."""
    image, mask = good_pair()
    names = [f"n{i:03d}" for i in range(60)] + ["p", "p.a", "p.n", "p.z"]
    for name in names:
        for key, data in ((f"incoming/f/{name}.png", image), (f"incoming/f/{name}.mask.png", mask)):
            stack.s3.put_object(Bucket=BUCKET, Key=key, Body=data)
    answer = lambda name: stack.s3.put_object(Bucket=BUCKET, Key=f"results/f/{name}/result.json", Body=b"{}")  # noqa: E731
    for name in names[:50]:
        answer(name)
    listed = []
    stack.s3.meta.events.register("after-call.s3.ListObjectsV2",
                                  lambda parsed, **kw: listed.extend(o["Key"] for o in parsed.get("Contents", [])))
    assert first_unanswered(stack.s3, BUCKET, "f") == "f/n050"
    for name in names[50:60] + ["p.a", "p.n", "p.z"]:
        answer(name)
    listed.clear()
    assert first_unanswered(stack.s3, BUCKET, "f", start="f/n050") == "f/p"
    assert not [k for k in listed if k < "incoming/f/n050" or "results/" < k < "results/f/n050"]  # the answered before it: not read
    answer("p")
    assert first_unanswered(stack.s3, BUCKET, "f", start="f/p") is None
    stack.s3.delete_object(Bucket=BUCKET, Key="results/f/p.n/result.json")
    # p.n has no answer: the watch stops there, and resumes from p, whose other half it had not reached
    assert first_unanswered(stack.s3, BUCKET, "f", start="f/n050") == first_unanswered(stack.s3, BUCKET, "f", start="f/p") == "f/p"
