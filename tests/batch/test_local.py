"""``bdekit batch`` on the local process pool: mixed evidence, job lists, exit codes, resume,
output safety. Outputs are checked against the synth manifests."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from bdekit.errors import EXIT_FORMAT, EXIT_KEY, EXIT_OK, EXIT_OTHER, EXIT_PARTIAL, EXIT_USAGE
from bdekit.image.mapfile import read_mapfile
from tests.batch import fleet
from tests.batch.conftest import Small
from tests.conftest import run_cli


def keyring_args(small: Small) -> list[str]:
    return ["--keyring", str(small.escrow), "--keyring", str(small.keys)]


def check_ok(out: Path, name: str, vol: fleet.Volume, row: dict) -> None:  # type: ignore[type-arg]
    output = out / name / f"{name}.img"
    assert row["status"] == ("damaged" if vol.damage else "ok"), row
    assert row["exit_code"] == (EXIT_PARTIAL if vol.damage else EXIT_OK)
    assert row["sha256"] == vol.sha256 == fleet.file_sha256(output)
    assert row["volume_size"] == vol.manifest.volume_size == output.stat().st_size
    assert row["volume_guid"] == vol.manifest.volume_guid
    assert row["method"] == vol.manifest.method
    assert row["damage_bytes"] == sum(n for _o, n in vol.damage)
    bad = [(p, s) for p, s, status in read_mapfile(out / name / f"{name}.img.map").unrescued()
           if status == "-"]
    assert bad == vol.damage
    report = json.loads((out / name / "report.json").read_text())
    assert report["complete"] is True and report["result"] == row
    assert not list((out / name).glob("*.bdekit-*"))  # no journal or partial left


def check_failed(out: Path, name: str, row: dict, code: int, text: str) -> None:  # type: ignore[type-arg]
    assert (row["status"], row["exit_code"]) == ("failed", code), row
    assert text in row["error"] and "\n" not in row["error"]
    assert not (out / name / f"{name}.img").exists()
    report = json.loads((out / name / "report.json").read_text())
    assert report["complete"] is False and report["result"]["error"] == row["error"]


def check_private(out: Path) -> None:
    for directory, _dirs, files in os.walk(out):
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700, directory
        for name in files:
            assert stat.S_IMODE(os.stat(os.path.join(directory, name)).st_mode) == 0o600, name


def test_directory_run(small: Small, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, _o, err = run_cli("batch", str(small.ev), "-o", str(out), *keyring_args(small),
                            "--workers", "2")
    assert code == EXIT_OTHER, err
    rows = fleet.summary_rows(out)
    assert sorted(rows) == sorted(small.volumes)
    for name in ("bek", "escrowed", "disk-p2", "damaged"):
        check_ok(out, name, small.volumes[name], rows[name])
    guid, _rp = fleet.recovery_password(small.volumes["escrowed"].manifest)
    assert (rows["escrowed"]["unlocked_via"], rows["escrowed"]["protector"],
            rows["escrowed"]["key_source"]) == ("recovery-password", guid, "escrow.csv:row 42")
    assert rows["bek"]["key_source"].endswith(".BEK:BEK")
    assert rows["disk-p2"]["partition"] == 2
    for name in ("nokey", "lone"):
        check_failed(out, name, rows[name], EXIT_KEY, "none of the")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["exit_code"] == EXIT_OTHER
    assert summary["counts"] == {"jobs": 6, "ok": 3, "damaged": 1, "failed": 2, "skipped": 0}
    csv_rows = fleet.csv_rows(out)
    assert {k: (r["status"], r["sha256"], r["damage_bytes"]) for k, r in csv_rows.items()} == {
        k: (r["status"], r["sha256"] or "", str(r["damage_bytes"])) for k, r in rows.items()}
    check_private(out)
    # the final table and one line per job on stderr; no secret anywhere
    assert "6 job(s): 3 ok, 1 with unrecoverable data, 2 failed" in err
    secrets = [fleet.recovery_password(v.manifest)[1] for v in small.volumes.values()
               if v.manifest.protectors[0]["type"] == "recovery-password"]
    texts = [err] + [p.read_text() for p in out.rglob("*") if p.is_file()
                     and not p.name.endswith(".img")]
    assert secrets and not [s for s in secrets for t in texts if s in t]


def job_list(tmp_path: Path, small: Small, extra: list[dict]) -> Path:  # type: ignore[type-arg]
    path = tmp_path / "jobs.json"
    path.write_text(json.dumps({"jobs": extra}, indent=1))
    return path


def test_job_list_run(small: Small, tmp_path: Path) -> None:
    v = small.volumes
    guid, _rp = fleet.recovery_password(v["escrowed"].manifest)
    jobs = job_list(tmp_path, small, [
        {"input": str(v["bek"].image), "output": "first"},
        {"input": str(small.ev / "gone.img"), "output": "missing"},
        {"input": str(v["lone"].image), "key_file": str(small.lone_bek)},
        {"input": str(v["escrowed"].image), "key_entry": guid.lower()},
        {"input": str(v["escrowed"].image), "output": "wrong", "key_entry": "escrow.csv:row 2"},
        {"input": str(v["disk-p2"].image), "partition": 2, "output": "p2"},
        {"input": str(v["disk-p2"].image), "partition": 1, "output": "efi"},
    ])
    out = tmp_path / "out"
    code, _o, err = run_cli("batch", str(jobs), "-o", str(out), *keyring_args(small))
    assert code == EXIT_OTHER, err
    rows = fleet.summary_rows(out)
    assert list(rows) == ["first", "missing", "lone", "escrowed", "wrong", "p2", "efi"]
    check_ok(out, "first", v["bek"], rows["first"])
    check_ok(out, "lone", v["lone"], rows["lone"])
    check_ok(out, "escrowed", v["escrowed"], rows["escrowed"])
    check_ok(out, "p2", v["disk-p2"], rows["p2"])
    assert rows["lone"]["key_source"] == small.lone_bek.name + ":BEK"
    assert rows["escrowed"]["key_source"] == "escrow.csv:row 42"
    check_failed(out, "missing", rows["missing"], EXIT_OTHER, "gone.img")
    check_failed(out, "wrong", rows["wrong"], EXIT_KEY, "")
    check_failed(out, "efi", rows["efi"], EXIT_FORMAT, "")
    assert rows["wrong"]["volume_guid"] == v["escrowed"].manifest.volume_guid


def test_exit_codes(small: Small, tmp_path: Path) -> None:
    v = small.volumes
    ok = job_list(tmp_path, small, [{"input": str(v["bek"].image)}])
    code, _o, err = run_cli("-q", "batch", str(ok), "-o", str(tmp_path / "o1"),
                            *keyring_args(small))
    assert (code, err) == (EXIT_OK, "")
    partial = job_list(tmp_path, small, [{"input": str(v["bek"].image)},
                                         {"input": str(v["damaged"].image),
                                          "mapfile": str(v["damaged"].image) + ".map"}])
    code, _o, err = run_cli("batch", str(partial), "-o", str(tmp_path / "o2"),
                            *keyring_args(small))
    assert code == EXIT_PARTIAL, err
    check_ok(tmp_path / "o2", "damaged", v["damaged"], fleet.summary_rows(tmp_path / "o2")[
        "damaged"])
    # without the mapfile the garbage is not known to be damage: the job decrypts it (as
    # `bdekit decrypt` would) and the batch succeeds
    blind = job_list(tmp_path, small, [{"input": str(v["damaged"].image)}])
    code, _o, err = run_cli("batch", str(blind), "-o", str(tmp_path / "o3"),
                            *keyring_args(small))
    assert code == EXIT_OK, err


def test_resume_skips_complete_jobs_and_reruns_failed(small: Small, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["batch", str(small.ev), "-o", str(out), "--keyring", str(small.keys)]
    code, _o, err = run_cli(*args)
    assert code == EXIT_OTHER, err
    reports = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("*/report.json")}
    code, _o, err = run_cli(*args)
    assert code == EXIT_USAGE and "use --resume to continue it or --force" in err
    # the escrow CSV was found: the jobs that lacked it now run, the finished ones are skipped
    code, _o, err = run_cli(*args, "--keyring", str(small.escrow), "--resume")
    assert code == EXIT_OTHER, err
    after = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("*/report.json")}
    rows = fleet.summary_rows(out)
    assert rows["escrowed"]["status"] == "ok"
    rerun = {name for name in after if after[name] != reports[name]}
    assert rerun == {"escrowed", "nokey", "lone"}
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(summary["skipped"]) == ["bek", "damaged", "disk-p2"]
    check_ok(out, "damaged", small.volumes["damaged"], rows["damaged"])
    # --force redoes every job
    code, _o, err = run_cli(*args, "--keyring", str(small.escrow), "--force")
    assert code == EXIT_OTHER, err
    assert all(p.stat().st_mtime_ns != after[p.parent.name] for p in out.glob("*/report.json"))


def test_outputs_never_resolve_to_an_input(small: Small, tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "x").mkdir(parents=True)
    inside = out / "x" / "x.img"
    inside.write_bytes(small.volumes["bek"].image.read_bytes())
    jobs = job_list(tmp_path, small, [{"input": str(inside)}])
    code, _o, err = run_cli("batch", str(jobs), "-o", str(out), "--force")
    assert code == EXIT_USAGE and "lies inside the output directory" in err
    jobs = job_list(tmp_path, small, [{"input": str(small.volumes["bek"].image)}])
    before = fleet.file_sha256(small.volumes["bek"].image)
    code, _o, err = run_cli("batch", str(jobs), "-o", str(tmp_path / "o2"), "--report",
                            str(small.volumes["bek"].image))
    assert code == EXIT_USAGE and "refusing to write the report over an input" in err
    assert fleet.file_sha256(small.volumes["bek"].image) == before


def test_report_copy_and_missing_scheduler_extra(small: Small, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    jobs = job_list(tmp_path, small, [{"input": str(small.volumes["bek"].image)}])
    code, _o, err = run_cli("batch", str(jobs), "-o", str(tmp_path / "o"), "--keyring",
                            str(small.keys), "--report", str(tmp_path / "r.json"))
    assert code == EXIT_OK, err
    assert (tmp_path / "r.json").read_text() == (tmp_path / "o" / "summary.json").read_text()
    import importlib

    real = importlib.import_module

    def no_dask(name: str, *a: object) -> object:
        if name == "distributed":
            raise ImportError(name)
        return real(name, *a)  # type: ignore[arg-type]

    monkeypatch.setattr(importlib, "import_module", no_dask)
    code, _o, err = run_cli("batch", str(jobs), "-o", str(tmp_path / "o3"), "--scheduler",
                            "tcp://127.0.0.1:1")
    assert code == EXIT_USAGE and "pip install 'bdekit[cluster]'" in err


def test_repair_mode(tmp_path: Path) -> None:
    ev = tmp_path / "ev"
    m = fleet.build(ev / "wiped.img", seed=21, kind="bek", keys=tmp_path / "keys", size="3M")
    fleet.damage.apply(ev / "wiped.img", zero_header=True)
    keys = ["--keyring", str(tmp_path / "keys")]
    out = tmp_path / "out"
    code, _o, err = run_cli("batch", str(ev), "-o", str(out), "--mode", "repair", *keys)
    assert code == EXIT_OK, err
    row = fleet.summary_rows(out)["wiped-at0"]
    assert row["sha256"] == m.volume_sha256 == fleet.file_sha256(out / "wiped-at0" /
                                                                 "wiped-at0.img")
    jobs = job_list(tmp_path, None, [{"input": str(ev / "wiped.img"), "offset": 0}])  # type: ignore[arg-type]
    code, _o, err = run_cli("batch", str(jobs), "-o", str(tmp_path / "o2"), *keys)
    assert code == EXIT_OTHER
    row = fleet.summary_rows(tmp_path / "o2")["wiped-at0"]
    assert row["exit_code"] == EXIT_FORMAT and "(--mode repair salvages" in row["error"]
