"""Key rotation while the node serves, and bulk enrolment from a folder or a CSV."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

from idv.client import IdvClient
from tests.conftest import ID_SUBJECT_1, ID_SUBJECT_2, nuaa_frames, nuaa_sequences

CLI = [sys.executable, "-m", "idv.cli"]


def _burst(testdata: Path, subject: str) -> list[bytes]:
    return [p.read_bytes() for p in next(iter(nuaa_sequences(testdata, "live", subject).values()))[:9:3]]


def test_rotation_reencrypts_every_template_while_the_node_keeps_verifying(node, testdata) -> None:
    data_dir = node.settings.store.data_dir
    with IdvClient(f"127.0.0.1:{node.port}", retries=0) as client:
        client.enroll(ID_SUBJECT_1, "张三", [nuaa_frames(testdata, "print", "0001")[0].read_bytes()])
        client.enroll(ID_SUBJECT_2, "李四", [nuaa_frames(testdata, "print", "0004")[0].read_bytes()])
        rotated = subprocess.run([*CLI, "keys", "rotate", "--data-dir", str(data_dir)], capture_output=True,
                                 text=True, timeout=120)
        assert rotated.returncode == 0, rotated.stderr
        assert "data key 2 is current; re-encrypted 2 identities" in rotated.stdout
        with sqlite3.connect(data_dir / "references.sqlite3") as db:
            assert {row[0] for row in db.execute("SELECT key_id FROM templates")} == {2}
        # The running node has never seen key 2: it loads it on first use, no restart.
        assert client.verify(ID_SUBJECT_1, "张三", _burst(testdata, "0001")).verdict == "PASS"
        assert client.verify(ID_SUBJECT_2, "李四", _burst(testdata, "0004")).verdict == "PASS"


def test_bulk_enrolment_from_a_folder_and_a_csv(node, testdata, tmp_path) -> None:
    folder = tmp_path / "references"
    folder.mkdir()
    shutil.copy(nuaa_frames(testdata, "print", "0001")[0], folder / f"{ID_SUBJECT_1}_张三.jpg")
    person = folder / f"{ID_SUBJECT_2}_李四"
    person.mkdir()
    shutil.copy(nuaa_frames(testdata, "print", "0004")[0], person / "a.jpg")
    shutil.copy((testdata / "images" / "group_six_faces.jpg"), folder / "110101199003074477_王五.jpg")
    target = ["--target", f"127.0.0.1:{node.port}"]
    result = subprocess.run([*CLI, "enroll-bulk", *target, str(folder)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1  # one row failed
    assert "enrolled 2 of 3" in result.stdout and "REFERENCE_MULTIPLE_FACES" in result.stdout
    assert "110101199003074477" not in result.stdout and "王五" not in result.stdout  # rows, not identities

    csv_file = tmp_path / "people.csv"
    shutil.copy(nuaa_frames(testdata, "print", "0005")[0], tmp_path / "p5.jpg")
    csv_file.write_text("id_number,name,image\n110101199003074477,王五,p5.jpg\n", encoding="utf-8")
    result = subprocess.run([*CLI, "enroll-bulk", *target, str(csv_file)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "enrolled 1 of 1" in result.stdout
    with IdvClient(f"127.0.0.1:{node.port}", retries=0) as client:
        assert client.verify("110101199003074477", "王五", _burst(testdata, "0005")).verdict == "PASS"
        assert client.verify(ID_SUBJECT_2, "李四", _burst(testdata, "0004")).verdict == "PASS"
