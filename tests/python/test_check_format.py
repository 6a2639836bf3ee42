"""scripts/check_format.sh, the test command's formatting check: it passes on the repository as
committed, and it fails, naming the file, on a tracked C++ file that clang-format would change."""
import shutil
import subprocess

from aq_paths import REPO

SCRIPT = REPO / "scripts" / "check_format.sh"


def run(repo):
    return subprocess.run(["bash", str(repo / "scripts" / "check_format.sh")], capture_output=True, text=True)


def make_repo(tmp_path, source: str):
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(SCRIPT, repo / "scripts" / "check_format.sh")
    shutil.copy(REPO / ".clang-format", repo / ".clang-format")
    (repo / "a.cc").write_text(source)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True)
    return repo


def test_the_repository_is_formatted():
    r = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_file_clang_format_would_change_fails_the_check_and_is_named(tmp_path):
    repo = make_repo(tmp_path, "int  f( int x ){return x;}\n")
    r = run(repo)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "a.cc" in r.stderr and "clang-format -i" in r.stderr, r.stderr
    subprocess.run(["clang-format", "-i", str(repo / "a.cc")], check=True)
    r = run(repo)
    assert r.returncode == 0, r.stdout + r.stderr
