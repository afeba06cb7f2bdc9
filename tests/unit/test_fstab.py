"""mount(8)'s call for an /etc/fstab line (``flowfs SOURCE MOUNTPOINT -o OPTIONS``) becomes
the ``flowfs mount`` command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowfs.cli import build_parser, main
from flowfs.errors import ConfigError
from flowfs.fstab import mount_argv
from flowfs.settings import OPTIONS, Option, from_args


def parsed(*options: str) -> object:
    return build_parser().parse_args(mount_argv(["flow", "/mnt/flow", "-o", ",".join(options)]))


@pytest.mark.parametrize("option", [o for o in OPTIONS if o.key != "mountpoint"],
                         ids=lambda o: o.key)
def test_every_setting_is_a_mount_option(option: Option) -> None:
    key = option.key
    value, expected = ("true", True) if option.boolean else ("v", "v")
    args = parsed("rw", f"{key}={value}")
    assert getattr(args, key) == expected
    assert args.command == "mount" and args.mountpoint == "/mnt/flow"


def test_what_mount_and_mount_fuse3_pass_is_accepted_and_changes_nothing() -> None:
    generic = ["rw", "ro", "dev", "suid", "nodev", "nosuid", "exec", "noexec", "noauto",
               "auto", "_netdev", "nofail", "defaults", "user", "users", "noatime",
               "x-systemd.automount", "x-systemd.mount-timeout=30", "comment=x"]
    assert mount_argv(["flow", "/m", "-o", ",".join(generic)]) == ["mount", "/m"]


def test_values_as_mount_passes_them() -> None:
    args = parsed("allow_other", "uid=1000", "gid=100", "umask=027",
                  'log_level="debug,httpx=info"', "token_file=/etc/flowfs/token")
    assert (args.allow_other, args.uid, args.gid, args.umask) == (True, "1000", "100", "027")
    assert args.log_level == "debug,httpx=info" and args.token_file == "/etc/flowfs/token"
    assert parsed("allow_other=no").allow_other is False
    several = mount_argv(["flow", "/m", "-o", "uid=1", "-ogid=2"])
    assert several == ["mount", "/m", "--uid", "1", "--gid", "2"]


def test_the_source_may_be_the_api_url() -> None:
    assert mount_argv(["https://acme.flow.bio/api", "/m", "-o", "rw"]) == [
        "mount", "/m", "--api-url", "https://acme.flow.bio/api"]
    assert mount_argv(["flow", "/m", "-o", "rw"]) == ["mount", "/m"]


@pytest.mark.parametrize("argv, message", [
    (["flow", "/m", "-o", "cache_sise=1G"], "unknown mount option 'cache_sise' (known: api_url"),
    (["flow", "/m", "-o", "mountpoint=/x"], "unknown mount option 'mountpoint'"),
    (["flow", "/m", "-o", "uid"], "mount option uid needs a value"),
    (["flow", "/m", "-o", "allow_other=maybe"], "mount option allow_other: 'maybe'"),
    (["flow", "/m", "-o", 'log_level="debug'], "unbalanced double quote"),
    (["flow", "/m", "/n", "-o", "rw"], "the form is flowfs SOURCE MOUNTPOINT -o OPTIONS"),
    (["flow", "/m", "--uid", "1", "-o", "rw"], "unexpected '--uid'"),
    (["mout", "/m"], "unknown command 'mout'"),
    (["flow", "/m", "-o", "token=s3cret"], "unknown mount option 'token' (known"),
])
def test_mistakes_are_one_line_naming_them(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        mount_argv(argv)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert "s3cret" not in str(err.value)  # a token pasted into fstab is not echoed


def test_the_options_reach_the_settings_as_flags(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    args = parsed("api_url=http://127.0.0.1:9/api", "umask=077", "cache_size=1G")
    values = from_args(args)
    assert values["umask"].value == 0o077 and values["umask"].source == "flag --umask"
    assert values["cache_size"].value == 2**30
    assert values["api_url"].value == "http://127.0.0.1:9/api"


def test_flowfs_in_mount_form_checks_the_mount_point_like_flowfs_mount(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    missing = tmp_path / "nowhere"
    assert main(["flow", str(missing), "-o", "rw,api_url=http://127.0.0.1:9/api"]) == 1
    assert f"mount point {missing} does not exist" in capsys.readouterr().err
    assert main(["flow", str(missing), "-o", "colour=red"]) == 1
    assert "flowfs: unknown mount option 'colour'" in capsys.readouterr().err
