import io

from mattingkit.progress import PlainProgress, progress


def test_headless_prints_a_few_plain_lines():
    buf = io.StringIO()
    out = [x for x in progress(range(1000), desc="work", headless=True, file=buf, lines=5)]
    assert out == list(range(1000))
    lines = buf.getvalue().splitlines()
    assert 5 <= len(lines) <= 6
    assert "\r" not in buf.getvalue()
    assert lines[-1].startswith("work: 1000/1000 100%")


def test_manual_updates_and_postfix():
    buf = io.StringIO()
    with PlainProgress(total=20, desc="train", lines=2, file=buf) as bar:
        for _ in range(20):
            bar.update()
            bar.set_postfix(loss=0.5)
    text = buf.getvalue()
    assert "loss=0.5" in text and len(text.splitlines()) == 2


def test_unknown_total_prints_once_at_close():
    buf = io.StringIO()
    list(progress((i for i in range(50)), headless=True, file=buf))
    assert buf.getvalue().splitlines() == [buf.getvalue().splitlines()[-1]]
    assert buf.getvalue().startswith("50 ")
