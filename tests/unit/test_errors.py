"""The one errno table: what a user's tool reports for each failure."""

import errno

import pytest

from flowfs import errors


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (errors.NotFound("x"), errno.ENOENT),
        (errors.Forbidden("x"), errno.EACCES),
        (errors.AuthExpired("x"), errno.EACCES),
        (errors.Transient("x"), errno.EIO),
        (errors.BadReply("x"), errno.EIO),
        (errors.ReadOnly("x"), errno.EROFS),
        (errors.BadManifest("x"), errno.EINVAL),
        (errors.InvalidName("x"), errno.EINVAL),
        (errors.TooBig("x"), errno.EFBIG),
        (errors.Exists("x"), errno.EEXIST),
        (errors.NotPermitted("x"), errno.EPERM),
    ],
)
def test_domain_errors_map_to_errno(exc: Exception, code: int) -> None:
    assert errors.errno_for(exc) == code


def test_unexpected_exceptions_have_no_errno() -> None:
    assert errors.errno_for(ValueError("bug")) is None
