"""Messages that say what to do next, where only a real mount can produce the situation."""

from __future__ import annotations

import pytest
from harness import FLOWFS, Mount, sh

pytestmark = pytest.mark.mount


def test_creating_a_bulk_download_under_a_taken_name_says_what_to_do(alice: Mount) -> None:
    create = (*FLOWFS, "downloads", "create", "twice", "projects/Liver RNA-seq/samples/liver_1")
    sh(*create, cwd=alice.path)
    again = sh(*create, cwd=alice.path, check=False)
    assert again.returncode == 1
    err = again.stderr.decode()
    assert "a bulk download named 'twice' exists already" in err, err
    assert "'flowfs downloads wait twice'" in err
    assert f"rm {alice.path}/.downloads/twice.status" in err
