/* flowfs._tlsfill: receive a TLS body into a buffer with one call, the GIL released.
 *
 * Python's ssl module decrypts one TLS record (16 KiB at most) per recv_into, and takes
 * the GIL back after each: at hundreds of MB/s that is tens of thousands of GIL round
 * trips a second, each one waiting behind the event loop's thread. fill() runs the same
 * SSL_read_ex loop in C until the buffer is full, so a receiving thread takes the GIL
 * once per call instead of once per record.
 *
 * It reads the SSL pointer out of the ssl module's _ssl._SSLSocket object, whose layout
 * (PyObject_HEAD, the owning socket, then SSL *) has not changed since CPython 3.7; the
 * Python side only uses this module on the CPython versions it was checked on, and
 * check() confirms the pointer is the SSL of that very socket (SSL_get_fd) before any
 * fill(). OpenSSL's functions are looked up at run time in the libssl the ssl module has
 * loaded: no headers, no second copy of OpenSSL.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <dlfcn.h>
#include <errno.h>
#include <poll.h>
#include <string.h>

typedef struct ssl_st SSL;

typedef struct {
    PyObject_HEAD
    PyObject *socket; /* weakref to the Python socket */
    SSL *ssl;
} SSLSocketHead;

#define WANT_READ 2
#define WANT_WRITE 3
#define ZERO_RETURN 6

static int (*ssl_read_ex)(SSL *, void *, size_t, size_t *);
static int (*ssl_get_error)(const SSL *, int);
static int (*ssl_get_fd)(const SSL *);
static void (*err_clear_error)(void);

static SSL *ssl_of(PyObject *obj) {
    if (strcmp(Py_TYPE(obj)->tp_name, "_ssl._SSLSocket") != 0) {
        PyErr_Format(PyExc_TypeError, "not an _ssl._SSLSocket: %s", Py_TYPE(obj)->tp_name);
        return NULL;
    }
    SSL *ssl = ((SSLSocketHead *)obj)->ssl;
    if (ssl == NULL)
        PyErr_SetString(PyExc_ValueError, "the TLS connection is closed");
    return ssl;
}

static void *libssl;

static int resolve(void) {
    if (ssl_read_ex)
        return 1;
    if (libssl == NULL)
        return 0;
    ssl_read_ex = dlsym(libssl, "SSL_read_ex");
    ssl_get_error = dlsym(libssl, "SSL_get_error");
    ssl_get_fd = dlsym(libssl, "SSL_get_fd");
    err_clear_error = dlsym(libssl, "ERR_clear_error");
    if (!(ssl_read_ex && ssl_get_error && ssl_get_fd && err_clear_error)) {
        ssl_read_ex = NULL;
        return 0;
    }
    return 1;
}

/* use(path) -> bool: take OpenSSL's functions from that libssl, already loaded by ssl. */
static PyObject *use(PyObject *self, PyObject *args) {
    const char *path;
    if (!PyArg_ParseTuple(args, "s", &path))
        return NULL;
    if (libssl == NULL)
        libssl = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
    return PyBool_FromLong(resolve());
}

/* check(sslobj, fd) -> bool: fill() may be used on this connection. */
static PyObject *check(PyObject *self, PyObject *args) {
    PyObject *obj;
    int fd;
    if (!PyArg_ParseTuple(args, "Oi", &obj, &fd))
        return NULL;
    if (!resolve())
        Py_RETURN_FALSE;
    SSL *ssl = ssl_of(obj);
    if (ssl == NULL)
        return NULL;
    return PyBool_FromLong(ssl_get_fd(ssl) == fd);
}

/* fill(sslobj, fd, buffer, start, timeout_ms) -> int
 *
 * Receives into buffer[start:] until it is full; returns how many bytes came. Fewer
 * come when timeout_ms pass without a byte (the caller looks at its stop flag and calls
 * again) or when the peer closes the connection (then -1 if none came). A TLS or
 * socket error raises OSError.
 */
static PyObject *fill(PyObject *self, PyObject *args) {
    PyObject *obj;
    int fd, timeout_ms;
    Py_buffer view;
    Py_ssize_t start;
    if (!PyArg_ParseTuple(args, "Oiw*ni", &obj, &fd, &view, &start, &timeout_ms))
        return NULL;
    SSL *ssl = ssl_of(obj);
    if (ssl == NULL || !resolve() || start < 0 || start > view.len) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "fill: bad arguments or no libssl");
        PyBuffer_Release(&view);
        return NULL;
    }
    char *buf = (char *)view.buf + start;
    size_t len = (size_t)(view.len - start), got = 0;
    int failure = 0, sys_errno = 0, closed = 0;
    Py_BEGIN_ALLOW_THREADS
    while (got < len) {
        size_t n = 0;
        int ok = ssl_read_ex(ssl, buf + got, len - got, &n);
        if (ok) {
            got += n;
            continue;
        }
        int e = ssl_get_error(ssl, ok);
        if (e == WANT_READ || e == WANT_WRITE) {
            struct pollfd pfd = {fd, e == WANT_READ ? POLLIN : POLLOUT, 0};
            int r = poll(&pfd, 1, timeout_ms);
            if (r == 0)
                break; /* quiet for timeout_ms: back to the caller */
            if (r < 0 && errno != EINTR) {
                failure = -1;
                sys_errno = errno;
                break;
            }
            continue;
        }
        err_clear_error();
        if (e == ZERO_RETURN)
            closed = 1;
        else {
            failure = e;
            sys_errno = errno;
        }
        break;
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    if (failure && got == 0) {
        if (failure == -1 || failure == 5 /* SSL_ERROR_SYSCALL */) {
            errno = sys_errno ? sys_errno : ECONNRESET;
            return PyErr_SetFromErrno(PyExc_OSError);
        }
        return PyErr_Format(PyExc_OSError, "TLS error %d while receiving", failure);
    }
    if (closed && got == 0)
        return PyLong_FromLong(-1);
    return PyLong_FromSize_t(got);
}

static PyMethodDef methods[] = {
    {"use", use, METH_VARARGS, "use(libssl_path) -> bool"},
    {"check", check, METH_VARARGS, "check(sslobj, fd) -> bool"},
    {"fill", fill, METH_VARARGS, "fill(sslobj, fd, buffer, start, timeout_ms) -> int"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_tlsfill", NULL, -1, methods};

PyMODINIT_FUNC PyInit__tlsfill(void) { return PyModule_Create(&module); }
