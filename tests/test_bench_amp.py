"""`benchmarks/amp.py` (``wildrayzer bench amp``): every phase x precision is timed and tabled, the bf16-attention
row swaps the package's attention for PyTorch's kernel only while it is timed, and bad arguments end in exit 2."""

import json
from pathlib import Path

import torch

import wildrayzer.nn as wnn

REPO = Path(__file__).resolve().parents[1]


def test_amp_bench_times_every_phase_and_restores_attention(monkeypatch, capsys, tmp_path):
    from wildrayzer.cli import main as cli_main

    monkeypatch.chdir(REPO)
    package_sdpa = wnn.sdpa
    seen = set()

    def spy(*a, **k):  # records which attention ran, keeps the package's behaviour
        seen.add(a[0].dtype)
        return package_sdpa(*a, **k)

    monkeypatch.setattr(wnn, "sdpa", spy)
    md = tmp_path / "amp.md"
    threads = torch.get_num_threads()
    other = "1" if threads > 1 else "2"  # a count the script must change and give back
    assert cli_main(["bench", "amp", "--quick", "--threads", other, "--md", str(md)]) == 0
    assert wnn.sdpa is spy  # put back after the bf16-attn rows
    assert torch.get_num_threads() == threads  # the script's --threads ends with it
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [(r["phase"], r["precision"]) for r in rows] == [
        (ph, pr) for ph in ("posed", "camera", "joint") for pr in ("fp32", "bf16", "bf16-attn")]
    assert all(r["step_s"] > 0 and len(r["runs_s"]) == 2 and r["batch"] == 2 for r in rows)
    assert seen == {torch.float32, torch.bfloat16}  # fp32 and bf16 rows went through the package's sdpa
    table = md.read_text().splitlines()
    assert len(table) == 5 and table[2].startswith("| posed | 2 |") and table[2].count("|") == 7


def test_amp_bench_rejects_bad_repeats(monkeypatch, capsys):
    from wildrayzer.cli import main as cli_main

    monkeypatch.chdir(REPO)
    assert cli_main(["bench", "amp", "--repeats", "0"]) == 2
    assert "--repeats must be >= 1" in capsys.readouterr().err


def test_amp_bench_compile_rows_run_the_model_under_torch_compile(monkeypatch, capsys):
    from wildrayzer.cli import main as cli_main
    from wildrayzer.model import WildRayZerModel

    monkeypatch.chdir(REPO)
    compiled = []

    def fake_compile(model):  # compiling takes minutes on a small CPU; the wiring is what is checked here
        compiled.append(model)
        return model

    monkeypatch.setattr(torch, "compile", fake_compile)
    assert cli_main(["bench", "amp", "--quick", "--threads", str(torch.get_num_threads()), "--compile"]) == 0
    out = capsys.readouterr().out
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [r["precision"] for r in rows] == ["fp32", "bf16", "bf16-attn", "bf16+compile"] * 3
    assert len(compiled) == 3 and all(isinstance(m, WildRayZerModel) for m in compiled)  # one model per phase
    table = [line for line in out.splitlines() if line.startswith("|")]
    assert table[0].endswith("| bf16 + compile (s) | its speed-up |")
    assert all(line.count("|") == 9 for line in table)
