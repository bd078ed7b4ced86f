"""Malformed command lines: each is answered with ONE line on stderr and exit code 2, never a
traceback, and nothing is trained or written before the mistake is reported."""
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import minidiff as md
from minidiff.cli import main


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A folder with a good tiny checkpoint and every kind of bad file the tests point at."""
    d = tmp_path_factory.mktemp("cli_bad")
    (d / "empty.npy").write_bytes(b"")
    (d / "dir.npy").mkdir()
    (d / "outdir").mkdir()
    (d / "afile").write_text("x")
    (d / "text.npy").write_text("not numpy")
    np.save(d / "strings.npy", np.array(["a", "b"]))
    np.save(d / "nan.npy", np.array([[0.0, np.nan]] * 10))
    rng = np.random.default_rng(0)
    np.save(d / "big.npy", rng.standard_normal((300, 2)) * 1000)  # points at coordinates ~1000
    np.save(d / "u8.npy", rng.integers(0, 255, (20, 1, 16, 16)).astype(np.uint8))  # 0..255 images
    md.save_checkpoint(d / "noconf.npz", md.MLPDenoiser(2, hidden=(8,)))  # save() without a config
    good = d / "good.npz"
    assert main(["train", "--steps", "3", "--n-train", "64", "--batch-size", "16", "--out", str(good), "--quiet"]) == 0
    # tampered copies of the good checkpoint: header JSON replaced
    with zipfile.ZipFile(good) as z:
        members = {n: z.read(n) for n in z.namelist()}
    meta = json.loads(str(np.load(good)["__meta__"]))
    for name, change in {"t_config": lambda m: m["model_config"].update(hidden=[10**6]),
                         "t_class": lambda m: m.update(model_class="Nope"),
                         "t_extra": lambda m: m.update(extra=None),
                         "t_nested": lambda m: m.update(config=json.loads("[" * 50 + "]" * 50))}.items():
        m = json.loads(json.dumps(meta))
        change(m)
        arrays = {k[:-4]: np.load(good)[k[:-4]] for k in members if k != "__meta__.npy"}
        np.savez(d / f"{name}.npz", __meta__=np.array(json.dumps(m)), **arrays)
    return d


CASES = [
    ["train", "--dataset", "empty.npy", "--out", "x.npz", "--steps", "2"],
    ["train", "--dataset", "dir.npy", "--out", "x.npz", "--steps", "2"],
    ["train", "--dataset", "text.npy", "--out", "x.npz", "--steps", "2"],
    ["train", "--dataset", "strings.npy", "--out", "x.npz", "--steps", "2"],
    ["train", "--dataset", "nan.npy", "--out", "x.npz", "--steps", "2"],
    ["train", "--dataset", "missing.csv", "--out", "x.npz", "--steps", "2"],
    ["train", "--dataset", "big.npy", "--out", "x.npz", "--steps", "2"],  # wrong scale: refused
    ["train", "--dataset", "u8.npy", "--model", "unet", "--out", "x.npz", "--steps", "2"],
    ["train", "--dataset", "spiral", "--out", "outdir", "--steps", "2"],  # --out a folder
    ["train", "--dataset", "spiral", "--out", "afile/x.npz", "--steps", "2"],  # parent is a file
    ["train", "--dataset", "no_such_set", "--out", "x.npz"],
    ["train", "--checkpoint-every", "-1", "--out", "x.npz"],
    ["train", "--steps", "0", "--out", "x.npz"],
    ["train", "--lr", "nan", "--out", "x.npz"],
    ["train", "--lr", "-1", "--out", "x.npz"],
    ["train", "--sigma-max", "inf", "--out", "x.npz"],
    ["train", "--batch-size", "abc", "--out", "x.npz"],
    ["train", "--model", "vae", "--dataset", "glyphs16", "--out", "outdir", "--steps", "1"],
    ["train", "--model", "vae", "--dataset", "glyphs16", "--out", "afile/x.npz", "--steps", "1"],
    ["train", "--out"],
    ["train"],
    ["sample", "--checkpoint", "noconf.npz", "--out", "s.npz"],
    ["sample", "--checkpoint", "missing.npz", "--out", "s.npz"],
    ["sample", "--checkpoint", "outdir", "--out", "s.npz"],
    ["sample", "--checkpoint", "afile", "--out", "s.npz"],
    ["sample", "--checkpoint", "t_config.npz", "--out", "s.npz"],
    ["sample", "--checkpoint", "t_class.npz", "--out", "s.npz"],
    ["sample", "--checkpoint", "t_extra.npz", "--out", "s.npz"],
    ["sample", "--checkpoint", "t_nested.npz", "--out", "s.npz"],
    ["sample", "--checkpoint", "good.npz", "--out", "s.txt"],
    ["sample", "--checkpoint", "good.npz", "--out", "outdir"],
    ["sample", "--checkpoint", "good.npz", "--out", "afile/s.npz"],
    ["sample", "--checkpoint", "good.npz", "--out", "s.npz", "--plot", "afile/p.png"],
    ["sample", "--checkpoint", "good.npz", "--out", "s.npz", "--plot", "p.jpg2"],
    ["sample", "--checkpoint", "good.npz", "--out", "s.npz", "--n", "-5"],
    ["sample", "--checkpoint", "good.npz", "--out", "s.npz", "--label", "3"],
    ["sample", "--checkpoint", "good.npz", "--out", "s.npz", "--sampler", "nope"],
    ["sample", "--checkpoint", "good.npz", "--out", "s.npz", "--steps", "0"],
    ["demo", "--steps", "0"],
    ["demo", "--fast", "--steps", "10"],
    ["demo", "--out", "afile/sub", "--fast"],
    ["demo", "--out", "afile", "--fast"],
    ["demo", "--n", "-5"],
    ["nonsense"],
    [],
]


@pytest.mark.parametrize("argv", CASES, ids=[" ".join(a) or "(none)" for a in CASES])
def test_malformed_command_line_is_one_line_and_exit_2(argv, files, monkeypatch, capsys):
    monkeypatch.chdir(files)
    before = sorted(os.listdir(files))
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse's usage errors exit through SystemExit
        rc = exc.code
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert rc == 2, out.err
    assert len(lines) == 1 and "Traceback" not in out.err, out.err
    assert "resume=" not in out.err and "grad_clip" not in out.err  # no Python-API advice
    assert sorted(os.listdir(files)) == before  # nothing written (no stray temp files either)


def test_resume_can_add_steps_to_a_finished_run(tmp_path):
    ck = tmp_path / "r.npz"
    base = ["train", "--n-train", "64", "--batch-size", "16", "--out", str(ck), "--quiet"]
    assert main(base + ["--steps", "3"]) == 0
    assert main(base + ["--steps", "5", "--resume"]) == 0
    assert md.load_checkpoint(ck).extra["step"] == 5 and len(md.load_checkpoint(ck).extra["losses"]) == 5


def test_outputs_checked_and_created_before_the_work(tmp_path, capsys):
    ck = tmp_path / "a" / "b" / "c.npz"  # folders that do not exist yet are created
    assert main(["train", "--steps", "2", "--n-train", "32", "--batch-size", "8", "--out", str(ck), "--quiet"]) == 0
    csv = tmp_path / "new" / "s.csv"
    fig = tmp_path / "figs" / "s.png"
    assert main(["sample", "--checkpoint", str(ck), "--steps", "2", "--n", "7", "--out", str(csv),
                 "--plot", str(fig)]) == 0
    pts = np.loadtxt(csv, delimiter=",", skiprows=1)  # CSV really: header row then one point per row
    assert pts.shape == (7, 2) and fig.stat().st_size > 5000
    assert oct(os.stat(ck).st_mode & 0o777) == oct(0o666 & ~_umask())  # the user's umask, not 0600


def _umask():
    m = os.umask(0o022)
    os.umask(m)
    return m


def test_help_lists_a_default_for_every_option(capsys):
    from minidiff.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name, parser in sub.choices.items():
        for action in parser._actions:
            if action.dest == "help":
                continue
            assert action.help and ("default" in action.help or "required" in action.help), (name, action.dest)
        with pytest.raises(SystemExit):
            main([name, "--help"])
        assert "``" not in capsys.readouterr().out  # plain text, not reStructuredText


def test_subprocess_errors_without_traceback(tmp_path):
    env = dict(os.environ, MINIDIFF_BACKEND="cupy")
    if md.cupy_available():
        pytest.skip("CuPy is available here")
    r = subprocess.run([sys.executable, "-m", "minidiff", "train", "--out", str(tmp_path / "x.npz")],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    # `minidiff info | head -1`: the reader closes the pipe early; no BrokenPipeError traceback
    p = subprocess.Popen([sys.executable, "-m", "minidiff", "info"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()  # nobody reads: the first print hits a closed pipe
    err = p.stderr.read().decode()
    p.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipe" not in err, err
