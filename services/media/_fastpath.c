/* The media node's per-copy loop in C: each subscriber's copy of one RTP packet rewritten,
 * SRTP-protected and sent, with no Python between the packet and the socket.
 *
 * services/media/fastpath.py says what each part is for; services/media/forwarding.py holds
 * the same rewrite in Python (the reference, and the path for whatever this loop hands back:
 * a copy waiting for a keyframe or a rebase, a header extension id above 14, a TURN relay).
 *
 * Outlet: one connection's way out: its nominated pair's socket (a file descriptor) and
 *   remote address, and its libsrtp sending context with pylibsrtp's srtp_protect (both as
 *   addresses, from pylibsrtp's cffi binding; the session object is kept alive here).
 * Copy: the base type of forwarding.Downstream: the rewrite state of one track going to one
 *   subscriber (SSRC, payload type, sequence and timestamp offsets, what was sent).
 * fan_out(): one packet to each ready Copy of a list; returns those it left to Python.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

/* libsrtp 2: srtp_err_status_t srtp_protect(srtp_t ctx, void *rtp_hdr, int *len_ptr) */
typedef int (*protect_fn)(void *context, void *header, int *length);

#define TRAILER 144              /* libsrtp's largest SRTP trailer (SRTP_MAX_TRAILER_LEN) */
#define MAX_PACKET (1500 - TRAILER) /* the longest plain packet protected, as Protector.MAX */
#define ONE_BYTE_PROFILE 0xBEDE
/* The longest one-byte extension block: profile and length (4), then mid (1+16),
 * abs-send-time (1+3) and level (1+1), padded to 24. */
#define MAX_EXTENSIONS 28

/* -- Outlet ---------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    int fd;                       /* -1: no socket to send on (closed, or a TURN relay) */
    struct sockaddr_storage address;
    socklen_t address_length;
    void *context;                /* srtp_t; NULL: no SRTP session */
    protect_fn protect;
    PyObject *session;            /* the pylibsrtp.Session that owns context */
    unsigned long long sent;      /* packets sent */
    unsigned long long dropped;   /* copies that sendto refused (buffer full, unreachable) */
    unsigned long long protect_failures;
} Outlet;

static int
Outlet_traverse(Outlet *self, visitproc visit, void *arg)
{
    Py_VISIT(self->session);
    return 0;
}

static int
Outlet_clear(Outlet *self)
{
    Py_CLEAR(self->session);
    return 0;
}

static void
Outlet_dealloc(Outlet *self)
{
    PyObject_GC_UnTrack(self);
    Outlet_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
Outlet_init(Outlet *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, ":Outlet", kwlist))
        return -1;
    self->fd = -1;
    self->context = NULL;
    self->protect = NULL;
    self->address_length = 0;
    Py_CLEAR(self->session);
    return 0;
}

static PyObject *
Outlet_protect_with(Outlet *self, PyObject *args)
{
    unsigned long long context, protect;
    PyObject *session;
    if (!PyArg_ParseTuple(args, "KKO:protect_with", &context, &protect, &session))
        return NULL;
    if (!context || !protect) {
        PyErr_SetString(PyExc_ValueError, "no SRTP context or srtp_protect");
        return NULL;
    }
    Py_INCREF(session);
    Py_XSETREF(self->session, session);
    self->context = (void *)(uintptr_t)context;
    self->protect = (protect_fn)(uintptr_t)protect;
    Py_RETURN_NONE;
}

static PyObject *
Outlet_send_on(Outlet *self, PyObject *args)
{
    int fd, port;
    const char *host;
    if (!PyArg_ParseTuple(args, "isi:send_on", &fd, &host, &port))
        return NULL;
    if (fd < 0 || port <= 0 || port > 65535) {
        PyErr_SetString(PyExc_ValueError, "no socket or no port");
        return NULL;
    }
    memset(&self->address, 0, sizeof(self->address));
    struct sockaddr_in *v4 = (struct sockaddr_in *)&self->address;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&self->address;
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        self->address_length = sizeof(*v4);
    } else if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        self->address_length = sizeof(*v6);
    } else {
        self->fd = -1;
        PyErr_Format(PyExc_ValueError, "not a numeric IPv4 or IPv6 address: %s", host);
        return NULL;
    }
    self->fd = fd;
    Py_RETURN_NONE;
}

static PyObject *
Outlet_close(Outlet *self, PyObject *Py_UNUSED(ignored))
{
    self->fd = -1;
    self->context = NULL;
    self->protect = NULL;
    Py_CLEAR(self->session);
    Py_RETURN_NONE;
}

/* Protect buffer[0:length] in place (buffer has room for the trailer); the new length, or
 * -1 with the failure counted. */
static int
protect_in_place(Outlet *self, unsigned char *buffer, int length)
{
    int status = self->protect(self->context, buffer, &length);
    if (status) {
        self->protect_failures++;
        return -1;
    }
    return length;
}

static void
send_protected(Outlet *self, const unsigned char *buffer, int length)
{
    ssize_t done = sendto(self->fd, buffer, (size_t)length, 0,
                          (struct sockaddr *)&self->address, self->address_length);
    if (done < 0)
        self->dropped++; /* EAGAIN, ENOBUFS, an ICMP error: UDP, so the copy is lost */
    else
        self->sent++;
}

/* ``packet`` copied into ``buffer`` and protected there: its new length; -1 if libsrtp
 * refused (counted), -2 with an exception set if ``packet`` is not one to protect. */
static int
protect_into(Outlet *self, PyObject *packet, unsigned char *buffer)
{
    Py_buffer view;
    if (PyObject_GetBuffer(packet, &view, PyBUF_SIMPLE) < 0)
        return -2;
    if (view.len > MAX_PACKET) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "packet is too long");
        return -2;
    }
    memcpy(buffer, view.buf, (size_t)view.len);
    int length = (int)view.len;
    PyBuffer_Release(&view);
    return protect_in_place(self, buffer, length);
}

static PyObject *
Outlet_protect(Outlet *self, PyObject *packet)
{
    unsigned char buffer[MAX_PACKET + TRAILER] __attribute__((aligned(16))); /* libsrtp reads words */
    if (!self->context) {
        PyErr_SetString(PyExc_ValueError, "the outlet has no SRTP session");
        return NULL;
    }
    int length = protect_into(self, packet, buffer);
    if (length == -2)
        return NULL;
    if (length < 0) {
        PyErr_SetString(PyExc_RuntimeError, "srtp_protect failed");
        return NULL;
    }
    return PyBytes_FromStringAndSize((const char *)buffer, length);
}

static PyObject *
Outlet_send(Outlet *self, PyObject *packet)
{
    unsigned char buffer[MAX_PACKET + TRAILER] __attribute__((aligned(16))); /* libsrtp reads words */
    if (!self->context || self->fd < 0) {
        PyErr_SetString(PyExc_ValueError, "the outlet is not open");
        return NULL;
    }
    int length = protect_into(self, packet, buffer);
    if (length == -2)
        return NULL;
    if (length >= 0)
        send_protected(self, buffer, length);
    Py_RETURN_NONE;
}

static PyObject *
Outlet_get_sending(Outlet *self, void *closure)
{
    return PyBool_FromLong(self->fd >= 0 && self->context != NULL);
}

static PyObject *
Outlet_get_protecting(Outlet *self, void *closure)
{
    return PyBool_FromLong(self->context != NULL);
}

static PyMethodDef Outlet_methods[] = {
    {"protect_with", (PyCFunction)Outlet_protect_with, METH_VARARGS,
     "protect_with(context, srtp_protect, session): the libsrtp context (an address), "
     "srtp_protect's address, and the object that keeps the context alive."},
    {"send_on", (PyCFunction)Outlet_send_on, METH_VARARGS,
     "send_on(fd, host, port): the socket to send on and the numeric address to send to."},
    {"close", (PyCFunction)Outlet_close, METH_NOARGS,
     "Nothing is protected or sent any more (before the socket or the session goes)."},
    {"protect", (PyCFunction)Outlet_protect, METH_O, "protect(packet) -> the SRTP packet."},
    {"send", (PyCFunction)Outlet_send, METH_O, "send(packet): protect and send one packet."},
    {NULL},
};

static PyMemberDef Outlet_members[] = {
    {"sent", T_ULONGLONG, offsetof(Outlet, sent), READONLY, "Packets sent."},
    {"dropped", T_ULONGLONG, offsetof(Outlet, dropped), READONLY,
     "Packets the socket refused (UDP: lost)."},
    {"protect_failures", T_ULONGLONG, offsetof(Outlet, protect_failures), READONLY,
     "Packets libsrtp would not protect."},
    {NULL},
};

static PyGetSetDef Outlet_getset[] = {
    {"sending", (getter)Outlet_get_sending, NULL, "Whether it has a socket and a session.",
     NULL},
    {"protecting", (getter)Outlet_get_protecting, NULL, "Whether it has a session.", NULL},
    {NULL},
};

static PyTypeObject OutletType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "services.media._fastpath.Outlet",
    .tp_doc = "One connection's socket, address and SRTP session, for sending RTP.",
    .tp_basicsize = sizeof(Outlet),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Outlet_init,
    .tp_dealloc = (destructor)Outlet_dealloc,
    .tp_traverse = (traverseproc)Outlet_traverse,
    .tp_clear = (inquiry)Outlet_clear,
    .tp_methods = Outlet_methods,
    .tp_members = Outlet_members,
    .tp_getset = Outlet_getset,
};

/* -- Copy ------------------------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    unsigned int ssrc;
    int payload_type;
    unsigned int seq_offset;
    unsigned int ts_offset;
    unsigned int highest_seq;
    unsigned int last_ts;
    double last_sent_at;
    unsigned long long packets;
    unsigned long long octets;
    long long epoch;
    PyObject *outlet;             /* an Outlet, or None */
    int extensions_known;         /* 1: the one-byte form below applies */
    int mid_id, abs_id, level_id; /* 0: not negotiated */
    int mid_length;
    unsigned char mid[16];
} Copy;

static int
Copy_traverse(Copy *self, visitproc visit, void *arg)
{
    Py_VISIT(self->outlet);
    return 0;
}

static int
Copy_clear(Copy *self)
{
    Py_CLEAR(self->outlet);
    return 0;
}

static void
Copy_dealloc(Copy *self)
{
    /* For a Python subclass (Downstream), subtype_dealloc has cleared its dict already. */
    PyObject_GC_UnTrack(self);
    Copy_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
Copy_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    Copy *self = (Copy *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    Py_INCREF(Py_None);
    self->outlet = Py_None;
    return (PyObject *)self;
}

static PyObject *
Copy_set_extensions(Copy *self, PyObject *args)
{
    int mid_id, abs_id, level_id;
    Py_buffer mid;
    if (!PyArg_ParseTuple(args, "iy*ii:set_extensions", &mid_id, &mid, &abs_id, &level_id))
        return NULL;
    int fits = mid_id >= 0 && mid_id < 15 && abs_id >= 0 && abs_id < 15 && level_id >= 0 &&
               level_id < 15 && (mid_id == 0 || (mid.len > 0 && mid.len <= 16));
    self->extensions_known = fits;
    self->mid_id = mid_id;
    self->abs_id = abs_id;
    self->level_id = level_id;
    self->mid_length = fits && mid_id ? (int)mid.len : 0;
    if (self->mid_length)
        memcpy(self->mid, mid.buf, (size_t)mid.len);
    PyBuffer_Release(&mid);
    Py_RETURN_NONE;
}

static PyObject *
Copy_get_outlet(Copy *self, void *closure)
{
    Py_INCREF(self->outlet);
    return self->outlet;
}

static int
Copy_set_outlet(Copy *self, PyObject *value, void *closure)
{
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete outlet");
        return -1;
    }
    if (value != Py_None && !PyObject_TypeCheck(value, &OutletType)) {
        PyErr_SetString(PyExc_TypeError, "outlet: an Outlet or None");
        return -1;
    }
    Py_INCREF(value);
    Py_SETREF(self->outlet, value);
    return 0;
}

static PyMethodDef Copy_methods[] = {
    {"set_extensions", (PyCFunction)Copy_set_extensions, METH_VARARGS,
     "set_extensions(mid_id, mid, abs_send_time_id, audio_level_id), 0 for none: the "
     "m-line's header extensions; ids above 14 or a mid over 16 bytes leave it to Python."},
    {NULL},
};

static PyMemberDef Copy_members[] = {
    {"ssrc", T_UINT, offsetof(Copy, ssrc), 0, "The SSRC of the subscriber's m-line."},
    {"payload_type", T_INT, offsetof(Copy, payload_type), 0, "Its payload type."},
    {"seq_offset", T_UINT, offsetof(Copy, seq_offset), 0, "Added to sequence numbers."},
    {"ts_offset", T_UINT, offsetof(Copy, ts_offset), 0, "Added to timestamps."},
    {"highest_seq", T_UINT, offsetof(Copy, highest_seq), 0, "The newest sequence sent."},
    {"last_ts", T_UINT, offsetof(Copy, last_ts), 0, "Its timestamp."},
    {"last_sent_at", T_DOUBLE, offsetof(Copy, last_sent_at), 0, "When (monotonic)."},
    {"packets", T_ULONGLONG, offsetof(Copy, packets), 0, "Packets sent."},
    {"octets", T_ULONGLONG, offsetof(Copy, octets), 0, "Payload octets sent."},
    {"epoch", T_LONGLONG, offsetof(Copy, epoch), 0,
     "The upstream epoch the offsets were set for; another one is left to Python."},
    {NULL},
};

static PyGetSetDef Copy_getset[] = {
    {"outlet", (getter)Copy_get_outlet, (setter)Copy_set_outlet,
     "The connection's Outlet, or None (copies then go through Python).", NULL},
    {NULL},
};

static PyTypeObject CopyType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "services.media._fastpath.Copy",
    .tp_doc = "One track going to one subscriber: the rewrite state the C loop uses.",
    .tp_basicsize = sizeof(Copy),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = Copy_new,
    .tp_dealloc = (destructor)Copy_dealloc,
    .tp_traverse = (traverseproc)Copy_traverse,
    .tp_clear = (inquiry)Copy_clear,
    .tp_methods = Copy_methods,
    .tp_members = Copy_members,
    .tp_getset = Copy_getset,
};

/* -- fan_out --------------------------------------------------------------------------- */

static inline int
newer(unsigned int a, unsigned int b)
{
    return a != b && ((a - b) & 0xFFFF) < 0x8000;
}

static inline void
put16(unsigned char *p, unsigned int v)
{
    p[0] = (unsigned char)(v >> 8);
    p[1] = (unsigned char)v;
}

static inline void
put32(unsigned char *p, unsigned int v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* The one-byte header extension block (RFC 8285) of ``copy`` into ``out``; its length. */
static Py_ssize_t
extension_block(const Copy *copy, unsigned char *out, const unsigned char *sent_at,
                int level)
{
    unsigned char *body = out + 4;
    Py_ssize_t n = 0;
    if (copy->mid_id) {
        body[n++] = (unsigned char)((copy->mid_id << 4) | (copy->mid_length - 1));
        memcpy(body + n, copy->mid, (size_t)copy->mid_length);
        n += copy->mid_length;
    }
    if (copy->abs_id) {
        body[n++] = (unsigned char)((copy->abs_id << 4) | 2);
        memcpy(body + n, sent_at, 3);
        n += 3;
    }
    if (level >= 0 && copy->level_id) {
        body[n++] = (unsigned char)(copy->level_id << 4);
        body[n++] = (unsigned char)level;
    }
    if (n == 0)
        return 0;
    while (n % 4)
        body[n++] = 0;
    put16(out, ONE_BYTE_PROFILE);
    put16(out + 2, (unsigned int)(n / 4));
    return 4 + n;
}

static PyObject *
fan_out(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 11) {
        PyErr_SetString(PyExc_TypeError,
                        "fan_out(copies, epoch, first, marker, sequence, timestamp, csrc, "
                        "payload, sent_at, level, now)");
        return NULL;
    }
    PyObject *copies = args[0];
    if (!PyList_Check(copies)) {
        PyErr_SetString(PyExc_TypeError, "copies: a list");
        return NULL;
    }
    long long epoch = PyLong_AsLongLong(args[1]);
    long first = PyLong_AsLong(args[2]);
    long marker = PyLong_AsLong(args[3]);
    unsigned long sequence = PyLong_AsUnsignedLong(args[4]);
    unsigned long timestamp = PyLong_AsUnsignedLong(args[5]);
    if (PyErr_Occurred())
        return NULL;
    PyObject *csrc = args[6], *payload = args[7], *sent_at = args[8], *level_object = args[9];
    if (!PyBytes_Check(csrc) || !PyBytes_Check(payload) || !PyBytes_Check(sent_at) ||
        PyBytes_GET_SIZE(sent_at) != 3) {
        PyErr_SetString(PyExc_TypeError, "csrc, payload: bytes; sent_at: 3 bytes");
        return NULL;
    }
    int level = -1;
    if (level_object != Py_None) {
        if (!PyBytes_Check(level_object) || PyBytes_GET_SIZE(level_object) != 1) {
            PyErr_SetString(PyExc_TypeError, "level: 1 byte or None");
            return NULL;
        }
        level = (unsigned char)PyBytes_AS_STRING(level_object)[0];
    }
    double now = PyFloat_AsDouble(args[10]);
    if (now == -1.0 && PyErr_Occurred())
        return NULL;

    const unsigned char *csrc_bytes = (const unsigned char *)PyBytes_AS_STRING(csrc);
    Py_ssize_t csrc_length = PyBytes_GET_SIZE(csrc);
    const unsigned char *payload_bytes = (const unsigned char *)PyBytes_AS_STRING(payload);
    Py_ssize_t payload_length = PyBytes_GET_SIZE(payload);
    const unsigned char *sent_at_bytes = (const unsigned char *)PyBytes_AS_STRING(sent_at);
    unsigned char buffer[MAX_PACKET + TRAILER] __attribute__((aligned(16))); /* libsrtp reads words */
    PyObject *left = NULL; /* the copies left to Python, made on the first one */

    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(copies); i++) {
        PyObject *item = PyList_GET_ITEM(copies, i);
        Copy *copy = (Copy *)item;
        Outlet *outlet = NULL;
        int fast = PyObject_TypeCheck(item, &CopyType) && copy->epoch == epoch &&
                   copy->extensions_known && copy->outlet != Py_None;
        if (fast) {
            outlet = (Outlet *)copy->outlet;
            fast = outlet->fd >= 0 && outlet->context != NULL &&
                   12 + csrc_length + MAX_EXTENSIONS + payload_length <= MAX_PACKET;
        }
        if (!fast) {
            if (left == NULL && (left = PyList_New(0)) == NULL)
                return NULL;
            if (PyList_Append(left, item) < 0) {
                Py_DECREF(left);
                return NULL;
            }
            continue;
        }
        unsigned int seq = (unsigned int)((sequence + copy->seq_offset) & 0xFFFF);
        unsigned int ts = (unsigned int)((timestamp + copy->ts_offset) & 0xFFFFFFFFu);
        Py_ssize_t at = 12;
        memcpy(buffer + at, csrc_bytes, (size_t)csrc_length);
        at += csrc_length;
        Py_ssize_t extensions = extension_block(copy, buffer + at, sent_at_bytes, level);
        at += extensions;
        buffer[0] = (unsigned char)(extensions ? (first | 0x10) : first);
        buffer[1] = (unsigned char)(marker | copy->payload_type);
        put16(buffer + 2, seq);
        put32(buffer + 4, ts);
        put32(buffer + 8, copy->ssrc);
        memcpy(buffer + at, payload_bytes, (size_t)payload_length);
        int length = protect_in_place(outlet, buffer, (int)(at + payload_length));
        if (length >= 0)
            send_protected(outlet, buffer, length);
        if (newer(seq, copy->highest_seq)) {
            copy->highest_seq = seq;
            copy->last_ts = ts;
            copy->last_sent_at = now;
        }
        copy->packets++;
        copy->octets += (unsigned long long)payload_length;
    }
    if (left == NULL)
        Py_RETURN_NONE;
    return left;
}

static PyMethodDef module_methods[] = {
    {"fan_out", (PyCFunction)(void (*)(void))fan_out, METH_FASTCALL,
     "fan_out(copies, epoch, first, marker, sequence, timestamp, csrc, payload, sent_at, "
     "level, now) -> the copies left to Python (a list), or None: one packet, rewritten, "
     "protected and sent to each Copy whose epoch is ``epoch`` and whose outlet is open."},
    {NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "services.media._fastpath",
    .m_doc = "The per-copy loop of the media node's packet path, in C.",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__fastpath(void)
{
    if (PyType_Ready(&OutletType) < 0 || PyType_Ready(&CopyType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddIntConstant(m, "MAX_PACKET", MAX_PACKET) < 0 ||
        PyModule_AddObjectRef(m, "Outlet", (PyObject *)&OutletType) < 0 ||
        PyModule_AddObjectRef(m, "Copy", (PyObject *)&CopyType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
