"""progress.finish: a job's generator run to its end for scripts."""

from playground.progress import Progress, finish


def test_finish_runs_a_generator_to_its_end_and_returns_its_result():
    seen = []

    def job():
        for k in range(3):
            seen.append(k)
            yield Progress(k / 3, f"step {k}")
        return "done"

    assert finish(job()) == "done" and seen == [0, 1, 2]
