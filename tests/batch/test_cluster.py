"""``bdekit batch --scheduler``: the same jobs on a real Dask cluster (a ``dask scheduler``
and two ``dask worker`` processes on 127.0.0.1, random free ports, killed at the end), and a
worker killed mid-job: the scheduler runs the job again on the other worker, where it resumes
from its journal. Skipped when the ``cluster`` extra (dask[distributed]) is absent."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bdekit.errors import EXIT_FORMAT, EXIT_KEY, EXIT_OK, EXIT_OTHER
from tests.batch import fleet
from tests.batch.conftest import Small
from tests.batch.test_local import check_failed, check_ok, keyring_args
from tests.batch.test_resume import journal_done, wait_for
from tests.conftest import run_cli
from tests.paced_cli import spawn

pytest.importorskip("distributed", reason="dask[distributed] (bdekit[cluster]) is absent")

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[fleet.Cluster]:
    work = tmp_path_factory.mktemp("dask")
    c = fleet.Cluster(work, 2, env={"BDEKIT_AUDIT_LOG": str(work / "audit.jsonl")})
    try:
        yield c
    finally:
        c.stop()


def test_cluster_run(small: Small, cluster: fleet.Cluster, tmp_path: Path) -> None:
    v = small.volumes
    jobs = tmp_path / "jobs.csv"
    jobs.write_text("input,partition,output,mapfile\n"
                    f"{v['bek'].image},,bek,\n"
                    f"{small.ev / 'gone.img'},,missing,\n"
                    f"{v['escrowed'].image},,escrowed,\n"
                    f"{v['nokey'].image},,nokey,\n"
                    f"{v['damaged'].image},,damaged,{v['damaged'].image}.map\n"
                    f"{v['disk-p2'].image},2,disk-p2,\n"
                    f"{v['disk-p2'].image},1,efi,\n")
    out = tmp_path / "out"
    code, _o, err = run_cli("batch", str(jobs), "-o", str(out), *keyring_args(small),
                            "--scheduler", cluster.address)
    assert code == EXIT_OTHER, err
    rows = fleet.summary_rows(out)
    for name in ("bek", "escrowed", "damaged", "disk-p2"):
        check_ok(out, name, v[name], rows[name])
    assert rows["escrowed"]["key_source"] == "escrow.csv:row 42"
    check_failed(out, "missing", rows["missing"], EXIT_OTHER, "gone.img")
    check_failed(out, "nokey", rows["nokey"], EXIT_KEY, "none of the")
    check_failed(out, "efi", rows["efi"], EXIT_FORMAT, "")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["runner"] == f"dask {cluster.address}"
    # the tasks ran on the workers, which wrote the audit trail (key IDs, never keys)
    audit = (cluster.work / "audit.jsonl").read_text()
    guid, rp = fleet.recovery_password(v["escrowed"].manifest)
    assert guid in audit and rp not in audit


def test_unreachable_scheduler(small: Small, tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    from bdekit.batch import cluster as cluster_mod

    monkeypatch.setattr(cluster_mod, "CONNECT_TIMEOUT", 2)
    jobs = tmp_path / "jobs.csv"
    jobs.write_text(f"input\n{small.volumes['bek'].image}\n")
    port = fleet.free_port()
    code, _o, err = run_cli("batch", str(jobs), "-o", str(tmp_path / "out"), "--scheduler",
                            f"tcp://127.0.0.1:{port}")
    assert code == EXIT_OTHER
    assert f"tcp://127.0.0.1:{port}: cannot reach the Dask scheduler" in err


def test_worker_killed_mid_job(small: Small, tmp_path: Path) -> None:
    vols = []
    lines = ["input,output"]
    for n in range(3):
        image = tmp_path / "ev" / f"v{n}.img"
        m = fleet.build(image, seed=40 + n, kind="bek", keys=small.keys, size="4M")
        vols.append(fleet.Volume(image, m))
        lines.append(f"{image},v{n}")
    jobs = tmp_path / "jobs.csv"
    jobs.write_text("\n".join(lines) + "\n")
    c = fleet.Cluster(tmp_path, 2, env={"BDEKIT_AUDIT_LOG": os.devnull})
    out = tmp_path / "out"
    proc: subprocess.Popen[bytes] | None = None
    client = c.client()
    try:
        proc = spawn(["batch", str(jobs), "-o", str(out), "--keyring", str(small.keys),
                      "--scheduler", c.address, "--chunk-size", "65536", "--threads", "1"],
                     chunk_delay=0.05, journal_interval=0.05)
        w1 = c.workers["w1"][1]
        victim: list[str] = []

        def w1_job_under_way() -> bool:
            for key in client.processing().get(w1, ()):
                name = f"v{int(str(key).split('-')[2])}"
                if journal_done(out / name / f"{name}.img.bdekit-journal") >= 512 * 1024:
                    victim.append(name)
                    return True
            return False

        wait_for("a job under way on w1", w1_job_under_way, timeout=120)
        c.kill("w1")
        code = proc.wait(timeout=300)
        err = proc.stderr.read().decode() if proc.stderr else ""
    finally:
        client.close()
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        c.stop()
    assert code == EXIT_OK, err
    rows = fleet.summary_rows(out)
    name = victim[0]
    assert rows[name]["resumed_at"], rows[name]  # continued from its journal on w2
    for n, vol in enumerate(vols):
        check_ok(out, f"v{n}", vol, rows[f"v{n}"])
