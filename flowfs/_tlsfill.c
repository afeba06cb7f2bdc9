/* flowfs._tlsfill: receive a TLS body into a buffer with one call, the GIL released.
 *
 * Python's ssl module decrypts one TLS record (16 KiB at most) per recv_into, and takes
 * the GIL back after each: at hundreds of MB/s that is tens of thousands of GIL round
 * trips a second, each one waiting behind the event loop's thread. fill() runs the same
 * SSL_read_ex loop in C until the buffer is full, the peer closes, an error, or a
 * deadline, so a receiving thread takes the GIL once per call instead of once per record.
 *
 * It reads the SSL pointer out of the ssl module's _ssl._SSLSocket object, whose layout
 * starts PyObject_HEAD, the owning socket, then SSL * in every CPython 3 (others that
 * reach the SSL of a Python socket rely on the same); the Python side (flowfs/tlsfill.py)
 * uses this module only on the CPython versions it was checked on. OpenSSL's functions
 * are looked up in the _ssl module's own library and its dependencies (dlopen of its
 * file with RTLD_NOLOAD): the very OpenSSL that made the SSL object, never a second one;
 * and the Python side checks that its version is ssl.OPENSSL_VERSION_NUMBER.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <dlfcn.h>
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <time.h>

typedef struct ssl_st SSL;

typedef struct {
    PyObject_HEAD
    PyObject *socket; /* weakref to the Python socket */
    SSL *ssl;
} SSLSocketHead;

#define WANT_READ 2
#define WANT_WRITE 3
#define SYSCALL 5
#define ZERO_RETURN 6
#define REASON_MASK 0x7FFFFFUL
#define UNEXPECTED_EOF_WHILE_READING 294UL /* SSL_R_..., OpenSSL 3 */

static int (*ssl_read_ex)(SSL *, void *, size_t, size_t *);
static int (*ssl_get_error)(const SSL *, int);
static int (*ssl_get_fd)(const SSL *);
static void (*err_clear_error)(void);
static unsigned long (*err_peek_error)(void);
static void (*err_error_string_n)(unsigned long, char *, size_t);
static unsigned long (*version_num)(void);

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

/* use(path_of_the_ssl_module) -> int: OpenSSL's version number, 0 if unusable. */
static PyObject *use(PyObject *self, PyObject *args) {
    const char *path;
    if (!PyArg_ParseTuple(args, "s", &path))
        return NULL;
    if (ssl_read_ex == NULL) {
        void *lib = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
        if (lib == NULL)
            return PyLong_FromLong(0);
        ssl_read_ex = dlsym(lib, "SSL_read_ex");
        ssl_get_error = dlsym(lib, "SSL_get_error");
        ssl_get_fd = dlsym(lib, "SSL_get_fd");
        err_clear_error = dlsym(lib, "ERR_clear_error");
        err_peek_error = dlsym(lib, "ERR_peek_error");
        err_error_string_n = dlsym(lib, "ERR_error_string_n");
        version_num = dlsym(lib, "OpenSSL_version_num");
        if (!(ssl_read_ex && ssl_get_error && ssl_get_fd && err_clear_error && err_peek_error
              && err_error_string_n && version_num)) {
            ssl_read_ex = NULL;
            return PyLong_FromLong(0);
        }
    }
    return PyLong_FromUnsignedLong(version_num());
}

/* check(sslobj, fd) -> bool: this connection's SSL is the one of socket fd. */
static PyObject *check(PyObject *self, PyObject *args) {
    PyObject *obj;
    int fd;
    if (!PyArg_ParseTuple(args, "Oi", &obj, &fd))
        return NULL;
    if (ssl_read_ex == NULL)
        Py_RETURN_FALSE;
    SSL *ssl = ssl_of(obj);
    if (ssl == NULL)
        return NULL;
    return PyBool_FromLong(ssl_get_fd(ssl) == fd);
}

static long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* fill(sslobj, fd, buffer, start, timeout_ms) -> int
 *
 * Receives into buffer[start:] until it is full, and returns how many bytes came. Fewer
 * come once timeout_ms have passed since the call began (the caller looks at its stop
 * flag and calls again; a slow trickle cannot hold it longer), and -1 means the peer
 * closed the connection before the buffer was full. A TLS or socket error raises
 * OSError at once, with OpenSSL's reason.
 */
static PyObject *fill(PyObject *self, PyObject *args) {
    PyObject *obj;
    int fd, timeout_ms;
    Py_buffer view;
    Py_ssize_t start;
    if (!PyArg_ParseTuple(args, "Oiw*ni", &obj, &fd, &view, &start, &timeout_ms))
        return NULL;
    SSL *ssl = ssl_of(obj);
    if (ssl == NULL || ssl_read_ex == NULL || start < 0 || start > view.len
            || timeout_ms < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "fill: bad arguments, or use() not called");
        PyBuffer_Release(&view);
        return NULL;
    }
    char *buf = (char *)view.buf + start;
    size_t len = (size_t)(view.len - start), got = 0;
    int failure = 0, sys_errno = 0, closed = 0;
    char reason[256] = "";
    Py_BEGIN_ALLOW_THREADS
    long long deadline = now_ms() + timeout_ms;
    err_clear_error(); /* SSL_get_error needs an empty queue to be right */
    while (got < len) {
        size_t n = 0;
        errno = 0;
        int ok = ssl_read_ex(ssl, buf + got, len - got, &n);
        int read_errno = errno; /* before any other call can change it */
        if (ok) {
            got += n;
            continue;
        }
        int e = ssl_get_error(ssl, ok);
        if (e == WANT_READ || e == WANT_WRITE) {
            long long left = deadline - now_ms();
            if (left <= 0)
                break; /* the deadline: back to the caller, with what came */
            struct pollfd pfd = {fd, e == WANT_READ ? POLLIN : POLLOUT, 0};
            int r = poll(&pfd, 1, (int)left);
            if (r < 0 && errno != EINTR) {
                failure = SYSCALL;
                sys_errno = errno;
                break;
            }
            continue;
        }
        unsigned long code = err_peek_error();
        if (e == ZERO_RETURN || (e == SYSCALL && read_errno == 0 && code == 0)
                || (code & REASON_MASK) == UNEXPECTED_EOF_WHILE_READING)
            closed = 1; /* a close_notify, or the peer gone without one: as Python's ssl */
        else {
            failure = e;
            sys_errno = read_errno;
            if (code != 0)
                err_error_string_n(code, reason, sizeof reason);
        }
        err_clear_error(); /* Python's next ssl call on this thread must not see it */
        break;
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    if (failure) {
        if (failure == SYSCALL && sys_errno != 0) {
            errno = sys_errno;
            return PyErr_SetFromErrno(PyExc_OSError);
        }
        return PyErr_Format(PyExc_OSError, "TLS error %d while receiving%s%s", failure,
                            reason[0] ? ": " : "", reason);
    }
    if (closed && got == 0)
        return PyLong_FromLong(-1);
    return PyLong_FromSize_t(got);
}

static PyMethodDef methods[] = {
    {"use", use, METH_VARARGS, "use(path_of_the_ssl_module) -> OpenSSL version number or 0"},
    {"check", check, METH_VARARGS, "check(sslobj, fd) -> bool"},
    {"fill", fill, METH_VARARGS, "fill(sslobj, fd, buffer, start, timeout_ms) -> int"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_tlsfill", NULL, -1, methods};

PyMODINIT_FUNC PyInit__tlsfill(void) { return PyModule_Create(&module); }
