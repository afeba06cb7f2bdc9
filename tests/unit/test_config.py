"""Settings: config file, environment and flags, each value with its source."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from flowfs.config import MiB, MountConfig
from flowfs.errors import ConfigError
from flowfs.settings import BY_KEY, config_file, mount_config, read_file, render, resolve

NO_FLAGS: dict[str, object] = {}


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_defaults_when_nothing_is_set(tmp_path: Path) -> None:
    values = resolve(NO_FLAGS, env={}, path=tmp_path / "none.toml")
    assert values["api_url"].value == "https://app.flow.bio/api"
    assert values["cache_size"].value == 512 * MiB
    assert values["mountpoint"].value == Path.home() / "flow"
    assert values["allow_other"].value is False
    assert {v.source for v in values.values()} == {"default"}


def test_the_file_lives_under_xdg_config_home(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert config_file() == tmp_path / "flowfs" / "config.toml"
    write(config_file(), 'api_url = "http://flow.example:8000/api/"\ncache_size = "1G"\n')
    values = resolve(NO_FLAGS, env={})
    assert values["api_url"].value == "http://flow.example:8000/api"
    assert values["cache_size"].value == 2**30
    assert values["cache_size"].source == f"file {config_file()}"


def test_flags_beat_environment_beat_file(tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", "dir_ttl = 5\nio_timeout = 7\ncache_size = 100000000\n")
    env = {"FLOWFS_DIR_TTL": "6", "FLOWFS_IO_TIMEOUT": "8"}
    values = resolve({"dir_ttl": "9"}, env=env, path=path)
    assert (values["dir_ttl"].value, values["dir_ttl"].source) == (9.0, "flag --dir-ttl")
    assert (values["io_timeout"].value, values["io_timeout"].source) == (8.0,
                                                                         "env FLOWFS_IO_TIMEOUT")
    assert values["cache_size"].value == 100000000
    assert values["cache_size"].source == f"file {path}"


def test_an_unknown_key_names_the_key_and_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", 'cache_sise = "1G"\n')
    with pytest.raises(ConfigError) as err:
        resolve(NO_FLAGS, env={}, path=path)
    message = str(err.value)
    assert str(path) in message and "cache_sise" in message and "\n" not in message


@pytest.mark.parametrize("line, key", [
    ('cache_size = "lots"', "cache_size"),
    ('cache_size = "1M"', "cache_size"),
    ("io_timeout = 0", "io_timeout"),
    ('dir_ttl = "-1"', "dir_ttl"),
    ('allow_other = "maybe"', "allow_other"),
    ('api_url = "ftp://x"', "api_url"),
    ("mountpoint = 3", "mountpoint"),
])
def test_a_bad_value_in_the_file_names_the_key_and_the_file(tmp_path: Path, line: str,
                                                           key: str) -> None:
    path = write(tmp_path / "c.toml", line + "\n")
    with pytest.raises(ConfigError) as err:
        resolve(NO_FLAGS, env={}, path=path)
    message = str(err.value)
    assert message.startswith(f"{path}: {key}: ") and "\n" not in message


def test_a_bad_environment_value_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="^FLOWFS_CACHE_SIZE: cache_size: "):
        resolve(NO_FLAGS, env={"FLOWFS_CACHE_SIZE": "big"}, path=tmp_path / "none.toml")


def test_broken_toml_is_one_line_naming_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", "api_url = \n")
    with pytest.raises(ConfigError, match=f"^{path}: not valid TOML"):
        read_file(path)


def test_environment_booleans_and_paths(tmp_path: Path) -> None:
    env = {"FLOWFS_ALLOW_OTHER": "yes", "FLOWFS_MOUNTPOINT": "~/somewhere"}
    values = resolve(NO_FLAGS, env=env, path=tmp_path / "none.toml")
    assert values["allow_other"].value is True
    assert values["mountpoint"].value == Path.home() / "somewhere"


def test_the_mount_config_is_frozen_and_derives_the_files_url(tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", 'api_url = "https://app.flow.bio/api"\nallow_other = true\n')
    config = mount_config(resolve(NO_FLAGS, env={}, path=path), foreground=True)
    assert config.files_url == "https://files.flow.bio"
    assert config.allow_other and config.foreground
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.cache_size = 1  # type: ignore[misc]


def test_flowfs_config_output_is_toml_the_file_accepts(tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", 'cache_size = "2G"\nmountpoint = "/data/flow"\n')
    values = resolve({"io_timeout": "30"}, env={"FLOW_API_URL": "http://h:1/api"}, path=path)
    text = render(values, path)
    assert f"# file {path}" in text and "# flag --io-timeout" in text
    assert "# env FLOW_API_URL" in text and "# derived from api_url" in text
    again = write(tmp_path / "again.toml", text)
    reparsed = resolve(NO_FLAGS, env={}, path=again)
    assert set(tomllib.loads(text)) == set(BY_KEY)
    for key in BY_KEY:
        if key != "files_url":
            assert reparsed[key].value == values[key].value, key


def test_ownership_defaults_to_the_mounting_user_and_the_process_umask(tmp_path: Path) -> None:
    import os

    old = os.umask(0o027)
    try:
        values = resolve(NO_FLAGS, env={}, path=tmp_path / "none.toml")
    finally:
        os.umask(old)
    assert (values["uid"].value, values["gid"].value) == (os.getuid(), os.getgid())
    assert values["umask"].value == 0o027 and values["umask"].source == "default"
    assert values["token_file"].value is None


@pytest.mark.parametrize("given, mask", [("022", 0o022), ("0077", 0o077), ("0", 0),
                                         ("0o002", 0o002), (0o027, 0o027)])
def test_umask_is_octal_as_rclone_takes_it(tmp_path: Path, given: object, mask: int) -> None:
    values = resolve({"umask": given}, env={}, path=tmp_path / "none.toml")
    assert values["umask"].value == mask
    text = render(values, tmp_path / "none.toml")
    assert tomllib.loads(text)["umask"] == f"{mask:03o}"
    again = resolve(NO_FLAGS, env={}, path=write(tmp_path / "again.toml", text))
    assert again["umask"].value == mask


def test_ownership_from_each_source_reaches_the_mount_config(tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", 'umask = "077"\ngid = 100000\ntoken_file = "~/t"\n')
    values = resolve({"uid": "1234"}, env={"FLOWFS_GID": "55"}, path=path)
    config = mount_config(values)
    assert (config.uid, config.gid, config.umask) == (1234, 55, 0o077)
    assert config.token_file == Path.home() / "t"
    assert tomllib.loads(render(resolve(NO_FLAGS, env={}, path=path), path))["gid"] == 100000


@pytest.mark.parametrize("key, value", [("uid", "alice"), ("uid", "-1"), ("gid", "1.5"),
                                        ("umask", "8"), ("umask", "1777"), ("umask", "rw")])
def test_bad_ownership_values_name_the_flag(tmp_path: Path, key: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"^--{key}: {key}: "):
        resolve({key: value}, env={}, path=tmp_path / "none.toml")


def test_logging_is_configuration_like_any_other(tmp_path: Path) -> None:
    path = write(tmp_path / "config.toml", 'log_level = "INFO,httpx=debug"\n'
                 'log_file = "~/logs/flowfs.log"\nlog_max_size = "1M"\n')
    values = resolve(NO_FLAGS, env={}, path=path)
    assert values["log_level"].value == "info,httpx=debug"
    assert values["log_file"].value == Path.home() / "logs" / "flowfs.log"
    assert values["log_max_size"].value == MiB
    config = mount_config(values)
    assert (config.log_level, config.log_file, config.log_max_size) == (
        "info,httpx=debug", Path.home() / "logs" / "flowfs.log", MiB)
    flags = resolve({"log_level": "debug"}, env={"FLOWFS_LOG_MAX_SIZE": "128K"}, path=path)
    assert flags["log_level"].source == "flag --log-level"
    assert flags["log_max_size"].value == 128 * 1024
    assert tomllib.loads(render(values, path))["log_max_size"] == "1M"


def test_defaults_log_warnings_to_stderr_in_bounded_files() -> None:
    values = resolve(NO_FLAGS, env={}, path=Path("/nonexistent/config.toml"))
    assert values["log_level"].value == "warning" and values["log_file"].value is None
    assert values["log_max_size"].value == 10 * MiB
    assert tomllib.loads(render(values, Path("/nonexistent")))["log_file"] == ""


@pytest.mark.parametrize("key, value, message", [
    ("log_level", '"loud"', "level must be one of"),
    ("log_max_size", '"1K"', "at least 64K"),
])
def test_bad_logging_settings_name_the_key(tmp_path: Path, key: str, value: str,
                                           message: str) -> None:
    path = write(tmp_path / "config.toml", f"{key} = {value}\n")
    with pytest.raises(ConfigError, match=f"{key}: .*{message}"):
        resolve(NO_FLAGS, env={}, path=path)


def test_the_disk_cache_is_on_by_default_and_lives_under_xdg_cache_home(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    values = resolve(NO_FLAGS, env={}, path=tmp_path / "none.toml")
    assert values["disk_cache"].value is True
    assert values["cache_dir"].value == tmp_path / "xdg" / "flowfs"
    assert values["disk_cache_size"].value == 10 * 2**30
    config = mount_config(values)
    assert config.disk_cache and config.cache_dir is None  # None: the default place
    assert config.disk_cache_mode == "private"


def test_disk_cache_settings_from_flags_env_and_file(tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", 'cache_dir = "/scratch/flowfs"\n'
                 'disk_cache_size = "200G"\ndisk_cache_mode = "group"\n')
    config = mount_config(resolve(NO_FLAGS, env={}, path=path))
    assert config.cache_dir == Path("/scratch/flowfs")
    assert config.disk_cache_size == 200 * 2**30 and config.disk_cache_mode == "group"
    off = mount_config(resolve({"disk_cache": False}, env={}, path=path))
    assert off.disk_cache is False
    env = mount_config(resolve(NO_FLAGS, env={"FLOWFS_DISK_CACHE": "no"}, path=path))
    assert env.disk_cache is False


@pytest.mark.parametrize("line, message", [
    ('disk_cache_mode = "world"', "disk_cache_mode: 'world' is not one of private, group"),
    ('disk_cache_size = "1M"', "disk_cache_size: '1M' is too small"),
    ('disk_cache = "maybe"', "disk_cache: 'maybe' is not true or false"),
])
def test_bad_disk_cache_settings_name_the_key(tmp_path: Path, line: str, message: str) -> None:
    path = write(tmp_path / "c.toml", line + "\n")
    with pytest.raises(ConfigError, match=message):
        resolve(NO_FLAGS, env={}, path=path)


def test_a_mount_options_default_is_the_one_mountconfig_has() -> None:
    # One place holds each default: the settings rows and MountConfig must never drift.
    built = MountConfig(Path("/mnt/flow"))
    for key in ("cache_size", "io_timeout", "dir_ttl", "allow_other", "log_level",
                "log_file", "log_max_size", "metrics_addr", "token_file"):
        assert BY_KEY[key].default() == getattr(built, key), key
