"""The measurement harness: timing, environment, peak probe, memory, result files."""

import functools
import json
import os
import time
from pathlib import Path

import pytest
import torch

from harness import environment, memory, results, timing
from harness.peak import measure_peak, thread_round_trip_ns


def test_measure_reports_median_and_spread():
    calls = []
    t = timing.measure(lambda: calls.append(1), warmup=2, repeat=5)
    assert len(calls) == 7
    assert t.repeats == 5 and 0 <= t.min_ms <= t.time_ms and t.iqr_ms >= 0


def test_threads_context_sets_and_restores():
    old = torch.get_num_threads()
    with timing.threads(1) as n:
        assert n == 1 == torch.get_num_threads()
    assert torch.get_num_threads() == old
    with pytest.raises(ValueError):
        with timing.threads(-1):
            pass


def test_environment_has_provenance():
    env = environment.capture(threads=2)
    for key in (
        "cpu_model",
        "cpu_cores_logical",
        "ram_bytes",
        "os",
        "python",
        "packages",
        "git",
        "threads",
        "gpu",
    ):
        assert key in env
    assert env["threads"] == 2 and env["packages"]["torch"]


def test_cpu_described_beyond_its_model_name():
    """A VM's model name ("AMD EPYC") is every generation: the record keeps the family/model
    numbers, the widest SIMD and the caches, and describe_cpu words them (or only the name, for a
    record from before they were kept)."""
    details = environment.capture()["cpu_details"]
    assert set(details) >= {"family", "model", "simd", "l1d_bytes", "l2_bytes", "l3_bytes"}
    if Path("/sys/devices/system/cpu/cpu0/cache/index0").is_dir():
        assert details["l1d_bytes"] >= 16384 and details["l2_bytes"] > details["l1d_bytes"]
    if Path("/sys/devices/system/cpu/cpu0/cache/index3").is_dir():
        assert details["l3_bytes"] > details["l2_bytes"]
    env = {
        "cpu_model": "AMD EPYC",
        "cpu_details": {
            "family": "26",
            "model": "2",
            "simd": "AVX-512",
            "l1d_bytes": 49152,
            "l2_bytes": 1 << 20,
        },
    }
    assert environment.describe_cpu(env) == (
        "AMD EPYC (family 26 model 2; AVX-512; L1d 48 KiB, L2 1024 KiB a core)"
    )
    assert environment.describe_cpu({"cpu_model": "AMD EPYC"}) == "AMD EPYC"


def test_peak_probe_measures_something():
    peak = measure_peak(1, iters=200_000, trials=1)
    assert peak.gflops > 0.5 and peak.simd_width in (4, 8, 16)


def test_threads_round_trip_is_timed_between_two_threads_and_bounded_in_time():
    assert thread_round_trip_ns(1) is None
    start = time.perf_counter()
    ns = thread_round_trip_ns(2, trips=10**9, max_seconds=0.05)  # stops at the time limit
    assert time.perf_counter() - start < 5
    # two threads on one core hand over only when the OS switches them: milliseconds a trip
    assert ns is not None and 10 < ns < 1e8


@pytest.mark.skipif(not memory.supported(), reason="OS cannot reset the memory high-water mark")
def test_memory_sees_a_large_buffer():
    memory.exact_large_allocations()
    increase, _ = memory.peak_increase_bytes(lambda: torch.ones(64 * 2**20 // 4).sum())
    assert 60 * 2**20 <= increase <= 80 * 2**20
    median, each, _ = memory.median_peak_increase_bytes(
        lambda: torch.ones(64 * 2**20 // 4).sum(), calls=3
    )
    assert len(each) == 3 and median == sorted(each)[1]
    assert 60 * 2**20 <= median <= 80 * 2**20


def test_steady_allocator_reuses_freed_buffers_then_exact_mode_returns():
    """Timing's allocator settles into handing freed 40 MiB buffers out again (glibc coalesces
    freed chunks lazily: the first few rounds may still take fresh pages), so the fewest page
    faults of 16 rounds are few; the memory phase's exact mode, with the heap trimmed before each
    call as memory.peak_increase_bytes does, faults every large buffer in anew."""
    import resource

    def fewest_faults(trim: bool, rounds: int = 16) -> int:
        fewest = None
        for _ in range(rounds):
            if trim:
                memory._libc().malloc_trim(0)
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            torch.empty(40 * 2**20 // 4).fill_(1.0)  # allocate, touch, free
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
            fewest = faults if fewest is None else min(fewest, faults)
        return fewest

    pages = 40 * 2**20 // 4096
    try:
        if not memory.steady_allocator():
            pytest.skip("not glibc: the allocator cannot be tuned")
        assert fewest_faults(trim=False) < pages // 10
    finally:
        assert memory.exact_large_allocations()
    assert fewest_faults(trim=True, rounds=4) > pages // 2


@pytest.mark.parametrize("blocks", [[2**31 + 2**28], [2**30 + 2**28] * 2], ids=["one", "two"])
def test_steady_allocator_keeps_blocks_above_what_a_threshold_can_say(blocks):
    """Freed memory of more than 2 GiB (above any threshold mallopt's int can set) stays with the
    process and is handed out again without page faults: one block that large (under a threshold
    it would be mmapped), or two freed together (torch's conv7 at batch 128 frees 3.3 GB at once;
    under a threshold the heap is trimmed). Plain malloc, so that what is seen is these settings and
    not how glibc places aligned blocks."""
    import ctypes
    import resource

    import psutil

    if psutil.virtual_memory().available < 2 * sum(blocks):
        pytest.skip(f"needs {2 * sum(blocks) / 2**30:.1f} GiB of free memory to touch its blocks")
    libc = memory._libc()
    if libc is None or not memory.steady_allocator():
        pytest.skip("not glibc: the allocator cannot be tuned")
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    faults = []
    try:
        for _ in range(3):
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            pointers = [libc.malloc(n) for n in blocks]
            assert all(pointers), "out of memory"
            for pointer, n in zip(pointers, blocks, strict=True):
                ctypes.memset(pointer, 1, n)
            for pointer in pointers:
                libc.free(pointer)
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    finally:
        assert memory.exact_large_allocations()
        libc.malloc_trim(0)
    assert faults[0] > sum(blocks) // 4096 // 2 and max(faults[1:]) < 1000, faults


def test_runs_are_new_files_never_overwritten(tmp_path):
    kw = dict(
        config={"scale": "t"},
        environment={},
        timing_method="m",
        records=[{"layer": "a", "impl": "b", "time_ms": 1.0, "extra": {"x": 1}}],
        results_dir=tmp_path,
        command="cmd",
    )
    first = results.write_run("exp", **kw)
    second = results.write_run("exp", **kw)
    assert first != second and len(results.run_files("exp", tmp_path)) == 2
    doc = results.load_run(first)
    assert doc["schema_version"] == results.SCHEMA_VERSION and doc["command"] == "cmd"
    assert first.with_suffix(".csv").read_text().splitlines()[0] == "layer,impl,time_ms,extra"


def test_the_recorded_command_is_one_a_user_can_type_again(monkeypatch):
    """Run with -m, sys.argv[0] is the module's file (the GPU run's raw file read `__main__.py run
    im2win-gpu`); from an installed command, its name."""
    import sys
    import types

    main = types.ModuleType("__main__")
    main.__spec__ = types.SimpleNamespace(name="reproductions.__main__")
    monkeypatch.setitem(sys.modules, "__main__", main)
    argv = ["run", "im2win-cpu", "--layers", "conv1", "--results-dir", "my results"]
    monkeypatch.setattr(sys, "argv", ["/src/reproductions/__main__.py", *argv])
    expected = "run im2win-cpu --layers conv1 --results-dir 'my results'"
    assert results.invocation() == f"python -m reproductions {expected}"
    main.__spec__ = None
    monkeypatch.setattr(sys, "argv", ["/venv/bin/repro", *argv])
    assert results.invocation() == f"repro {expected}"


def test_atomic_write_refuses_to_overwrite_and_cleans_up(tmp_path):
    path = tmp_path / "f.json"
    results.atomic_write(path, "old", overwrite=False)
    with pytest.raises(FileExistsError):
        results.atomic_write(path, "new", overwrite=False)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_load_run_rejects_other_files(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text(json.dumps({"a": 1}))
    with pytest.raises(ValueError, match="not a run file"):
        results.load_run(bad)


def test_measure_interleaved_calls_in_rounds_of_shuffled_order():
    """Every round calls each callable once; the order changes from round to round, so that no
    callable always runs right after the same one, and is the same in every run (seeded)."""
    names = "abcd"

    def rounds():
        order = []
        out = timing.measure_interleaved(
            {n: functools.partial(order.append, n) for n in names}, warmup=1, repeat=30
        )
        assert set(out) == set(names) and all(t.repeats == 30 for t in out.values())
        assert order[:4] == list(names)  # the warm-up calls
        return [tuple(order[i : i + 4]) for i in range(4, len(order), 4)]

    first = rounds()
    assert len(first) == 30 and all(sorted(r) == list(names) for r in first)
    calls = [name for r in first for name in r]
    for name in names:  # in a fixed order, each would follow the same one in every round
        before = {calls[i - 1] for i in range(1, len(calls)) if calls[i] == name}
        assert before >= set(names) - {name}
    assert rounds() == first


def test_measure_interleaved_counts_the_page_faults_of_the_best_round():
    """A call that writes a fresh anonymous mapping of 8 MiB faults in each of its pages, in every
    round; one that allocates nothing takes none."""
    import mmap

    size = 8 << 20

    def fresh():
        pages = mmap.mmap(-1, size)
        for offset in range(0, size, mmap.PAGESIZE):
            pages[offset] = 1
        pages.close()

    out = timing.measure_interleaved({"fresh": fresh, "none": lambda: None}, warmup=1, repeat=3)
    assert out["fresh"].faults_in_best >= size // mmap.PAGESIZE
    assert out["none"].faults_in_best == 0
    assert "faults_in_best" in timing.method(1, 3)


def test_measure_interleaved_keeps_the_fast_ones_until_their_time_adds_up(monkeypatch):
    """A call of 1 ms stays in the rounds until 10 ms add up; one of 4 ms leaves after 3 rounds."""
    clock = [0.0]
    monkeypatch.setattr(timing.time, "perf_counter", lambda: clock[0])
    order = []

    def call(name, seconds):
        def fn():
            order.append(name)
            clock[0] += seconds

        return fn

    out = timing.measure_interleaved(
        {"slow": call("slow", 4e-3), "fast": call("fast", 1e-3)},
        warmup=0,
        repeat=2,
        min_time_s=0.01,
    )
    assert out["slow"].repeats == 3 and out["fast"].repeats == 10
    assert [sorted(order[i : i + 2]) for i in (0, 2, 4)] == [["fast", "slow"]] * 3
    assert order[6:] == ["fast"] * 7
    capped = timing.measure_interleaved(
        {"fast": call("fast", 1e-3)}, warmup=0, repeat=2, min_time_s=1.0, max_repeat=4
    )
    assert capped["fast"].repeats == 4
    assert "0.01 s" in timing.method(1, 2, 0.01) and "0.01" not in timing.method(1, 2)


def test_git_commit_only_from_the_projects_own_work_tree(tmp_path, monkeypatch):
    import subprocess

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run(
        [
            "git",
            "-C",
            str(tmp_path),
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "enclosing",
        ],
        check=True,
    )
    inner = tmp_path / "exported-copy"
    inner.mkdir()
    monkeypatch.setattr(environment, "REPO", inner.resolve())
    assert environment.git_state() == {"commit": "unknown", "dirty": None}
    monkeypatch.setenv("IM2WIN_SOURCE_COMMIT", "abc123")  # stated by whoever exported the copy
    assert environment.git_state() == {
        "commit": "unknown",
        "dirty": None,
        "declared_commit": "abc123",
    }
    monkeypatch.setattr(environment, "REPO", tmp_path.resolve())
    state = environment.git_state()
    # in a work tree too (a copy that carries an older .git): git's commit, and the stated one
    assert len(state["commit"]) == 40 and state["declared_commit"] == "abc123"


def test_atomic_write_keeps_normal_permissions(tmp_path):
    import os

    umask = os.umask(0o022)
    try:
        results.atomic_write(tmp_path / "f.json", "x")
    finally:
        os.umask(umask)
    assert (tmp_path / "f.json").stat().st_mode & 0o777 == 0o644


def test_the_microkernel_probe_measures_something():
    from im2win.cpu import lib

    assert lib().im2win_ukernel_gflops(200, 1) > 0.5


def test_the_microkernel_taken_apart_measures_each_part():
    from im2win.cpu import levels, lib

    if not levels.runs_here("x86-64-v3"):
        pytest.skip("the parts are measured where the CPU has FMA (x86-64-v3 and wider)")

    assert lib().im2win_ukernel_part_gflops(0, 200, 1) > 0.5  # the multiply-adds alone
    assert lib().im2win_ukernel_part_gflops(1, 200, 1) > 0.5  # with the B loads
    assert lib().im2win_ukernel_part_gflops(2, 200, 1) == 0.0  # no such part


def test_the_microkernel_is_not_taken_apart_without_fma():
    """SSE has no FMA: GCC would compute the parts' products, the same for every row, once a step
    (on x86-64-v2 they ran at 108% and 144% of the probe, the whole micro-kernel at 83%)."""
    from im2win.cpu import SOURCE, kernels_from, levels, lib
    from reproductions.im2win_cpu_probes import NO_FMA, microkernel_parts

    if not levels.x86_host():
        pytest.skip("x86 levels only")
    with kernels_from(SOURCE, "x86-64-v2"):
        assert lib().im2win_ukernel_part_gflops(0, 200, 1) == 0.0
        assert microkernel_parts(1, "x86-64-v2") == {"skipped": NO_FMA}


def test_the_microkernel_probe_stays_under_the_fma_peak():
    """A probe the compiler optimised (the micro-kernel inlined, its calls fused) read twice the
    FMA peak. Best of 3 each, interleaved; 1.3x leaves room for a shared machine's drift."""
    from harness.peak import measure_peak
    from im2win.cpu import lib

    micro = peak = 0.0
    for _ in range(3):
        micro = max(micro, lib().im2win_ukernel_gflops(20_000, 1))
        peak = max(peak, measure_peak(1, iters=2_000_000, trials=1).gflops)
    assert micro < 1.3 * peak, (micro, peak)


def test_check_writable_creates_nothing_and_names_what_is_in_the_way(tmp_path):
    from harness.results import check_writable

    check_writable(tmp_path / "new" / "deeper")  # a folder that can be made: fine
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "f").write_text("")
    with pytest.raises(ValueError, match=r"cannot write in .*/f/x: .*/f is a file, not a folder"):
        check_writable(tmp_path / "f" / "x")
    if Path("/proc/self").is_dir():  # a folder no one can create files in, root included
        with pytest.raises(ValueError, match=r"cannot write in /proc/x: .* \(/proc\)"):
            check_writable(Path("/proc/x"))
    if os.geteuid() != 0:  # root writes anywhere else
        (tmp_path / "ro").mkdir(mode=0o500)
        with pytest.raises(ValueError, match="Permission denied"):
            check_writable(tmp_path / "ro" / "results")


_TUNER_RUN = """
import hashlib, json, os, sys
from harness.tuner import OpenTunerLoop

ballast = [object() for _ in range(int(os.environ["BALLAST"]))]  # another memory layout
space = {name: list(range(16)) for name in "abcd"}
seen = []
for _ in range(2):  # two searches in one process: each starts afresh
    proposals = []
    with OpenTunerLoop(space, None, "p", "q", seed=3, technique=sys.argv[1]) as tuner:
        while len(proposals) < 150:
            for handle, config in tuner.ask():
                proposals.append(config)
                tuner.tell(handle, sum((v - 5) ** 2 for v in config.values()))
    seen.append(hashlib.sha256(json.dumps(proposals).encode()).hexdigest())
print(json.dumps(seen))
"""


def test_opentuner_search_takes_the_same_path_in_every_process():
    """One seed, one search path: in processes with different string hashing and memory layouts,
    and for a second search in the same process. (OpenTuner's differential evolution drew its
    parents in the set order of objects hashed by address: supersam search diverged after 55
    proposals from one process to the next.)"""
    import json
    import subprocess
    import sys

    for technique in ("DifferentialEvolutionAlt", "AUCBanditMetaTechniqueA"):
        runs = []
        for hash_seed, ballast in (("1", "0"), ("2", "1237")):
            env = dict(os.environ, PYTHONHASHSEED=hash_seed, BALLAST=ballast)
            out = subprocess.run(
                [sys.executable, "-c", _TUNER_RUN, technique],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            runs.append(json.loads(out.splitlines()[-1]))
        assert runs[0] == runs[1], technique
        assert runs[0][0] == runs[0][1], technique
