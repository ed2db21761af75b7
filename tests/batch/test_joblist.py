"""Job lists (CSV, JSON): fields, relative paths, names, and one-line errors naming the line."""

from __future__ import annotations

from pathlib import Path

import pytest

from bdekit.batch.joblist import default_name, read_job_list, safe_name
from bdekit.errors import UsageError


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_csv_fields_and_relative_paths(tmp_path: Path) -> None:
    path = write(tmp_path, "jobs.csv",
                 "# evidence of case 17\n"
                 "Input;Partition;Output;Key File;Key Entry;Mapfile\n"
                 "disks/a.E01;2;alpha;keys/{A}.BEK;;disks/a.map\n"
                 "\n"
                 "/abs/b.img;;;;export.csv:row 12;\n"
                 "c.vhdx;;;;7EDA7D4A;\n")
    a, b, c = read_job_list(path)
    assert (a.name, a.input, a.partition, a.key_file, a.mapfile) == (
        "alpha", str(tmp_path / "disks/a.E01"), 2, str(tmp_path / "keys/{A}.BEK"),
        str(tmp_path / "disks/a.map"))
    assert a.origin == "jobs.csv:line 3"
    assert (b.name, b.input, b.key_entry, b.partition, b.offset) == (
        "b", "/abs/b.img", "export.csv:row 12", None, None)
    assert (c.name, c.key_entry) == ("c", "7EDA7D4A")


def test_json_objects_strings_and_offsets(tmp_path: Path) -> None:
    path = write(tmp_path, "jobs.json",
                 '{"jobs": [\n  "x.img",\n  {"input": "x.img", "offset": "0x100000"},\n'
                 '  {"image": "y.img", "partition": 3, "key_entry": "{0A-B}"}\n]}\n')
    x, x_at, y = read_job_list(path)
    assert (x.name, x.offset, x.origin) == ("x", None, "jobs.json:line 2")
    assert (x_at.name, x_at.offset) == ("x-at1048576", 0x100000)
    assert (y.name, y.partition, y.key_entry, y.origin) == ("y-p3", 3, "{0A-B}",
                                                           "jobs.json:line 4")


def test_derived_names_are_made_unique(tmp_path: Path) -> None:
    path = write(tmp_path, "jobs.csv", "input\na/disk.img\nb/disk.img\nc/DISK.img\n")
    assert [j.name for j in read_job_list(path)] == ["disk", "disk-2", "DISK-3"]


@pytest.mark.parametrize(("name", "text", "message"), [
    ("l.csv", "input,partition\nx.img,1\nx.img,two\n", "l.csv: line 3: partition 'two' is not"),
    ("l.csv", "input,offset\nx.img,-5\n", "l.csv: line 2: offset -5 is negative"),
    ("l.csv", "input,partition,offset\nx.img,1,512\n",
     "l.csv: line 2: give a partition or an offset"),
    ("l.csv", "image,Recovery Password\nx.img,1\n", "l.csv: line 1: column 'Recovery Password'"
                                                    " would hold a secret"),
    ("l.csv", "input,colour\nx.img,red\n", "l.csv: line 1: unknown column 'colour'"),
    ("l.csv", "partition\n1\n", "l.csv: line 1: no input column"),
    ("l.csv", "input,output\na.img,same\nb.img,same\n",
     "l.csv: line 3: output name 'same' is also used on line 2"),
    ("l.csv", "input,output\na.img,../up\n", "l.csv: line 2: output name '../up' is not a plain"),
    ("l.csv", "input,partition\n,1\n", "l.csv: line 2: input is empty"),
    ("l.csv", "input\na.img,extra\n", "l.csv: line 2: 2 values for 1 columns"),
    ("l.csv", "input\n", "l.csv: the job list names no job"),
    ("l.json", '[\n {"input": "a.img"},\n {"input": "b.img",\n  "password": "x"}\n]',
     "l.json: line 3: column 'password' would hold a secret"),
    ("l.json", '[\n {"input": "a.img"},\n 7\n]', "l.json: line 3: a job is an object"),
    ("l.json", '[\n {"input": "a.img",}\n]', "l.json: line 2: not JSON"),
    ("l.json", '{"input": "a.img"}', "l.json: line 1: expected a list of jobs"),
    ("l.json", '[{"partition": 1}]', "l.json: line 1: the job has no input"),
])
def test_bad_lines_are_one_line_errors(tmp_path: Path, name: str, text: str,
                                       message: str) -> None:
    path = write(tmp_path, name, text)
    with pytest.raises(UsageError) as info:
        read_job_list(path)
    line = info.value.one_line()
    assert "\n" not in line
    assert line == f"{tmp_path}/{message}" or line.startswith(f"{tmp_path}/{message}"), line


def test_a_binary_file_is_not_a_job_list(tmp_path: Path) -> None:
    path = tmp_path / "disk.img"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(UsageError, match="not a job list"):
        read_job_list(str(path))


def test_names() -> None:
    assert safe_name("../etc/passwd") == "etc_passwd"
    assert safe_name("...") == "job"
    assert default_name("/e/case 17/Laptop #3.E01", 2) == "Laptop_3-p2"
    assert default_name("/e/sub/disk.001", root="/e") == "sub_disk"
    assert default_name("/e/v.vhdx", offset=1048576) == "v-at1048576"
