/* pcshim: LD_PRELOAD recorder for the edgefwd power-cut tests (ALICE-style record/replay).
 *
 * For files whose absolute path starts with $PCSHIM_DIR it appends to $PCSHIM_LOG one record
 * per write-type call (write, pwrite, writev, pwritev, pwritev2, ftruncate, fallocate) and per
 * sync-type call (fsync, fdatasync, sync_file_range, msync, syncfs, sync), and every call is
 * passed through unchanged.  Writes are logged BEFORE the real call (an "intent" with the
 * offset and the bytes) and again after it (a "done" with the result); syncs likewise (begin,
 * done).  So a write that the kernel may have taken but whose caller was killed before it
 * returned is still in the log, and a sync counts only once its "done" record is there.
 *
 * The log is opened with O_APPEND and written with one writev() syscall per record (no stdio
 * buffering), so records of several threads and processes never interleave, and a record is
 * in the page cache (which survives SIGKILL) before the call it describes proceeds / returns.
 * Any failure to write the log aborts the process: a silent gap would make the replay lie.
 *
 * Record: struct hdr, then `path_len` bytes of path, then `data_len` bytes of data.
 * Build:  gcc -O2 -shared -fPIC -o pcshim.so pcshim.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define MAGIC 0x54554350u /* "PCUT" */
enum {
    T_OPEN = 1,        /* result = fd; off = open flags; flags bit0: created by this call */
    T_WRITE = 2,       /* intent: off, len, data */
    T_WRITE_DONE = 3,  /* result = bytes written or -errno */
    T_TRUNC = 4,       /* intent: len = new size */
    T_TRUNC_DONE = 5,
    T_SYNC = 6,        /* begin: kind in `aux`, off/len range (sync_file_range, msync) */
    T_SYNC_DONE = 7,
    T_CLOSE = 8,
    T_MMAP_SHARED_W = 9, /* a writable shared mapping: stores through it are NOT recorded */
    T_FALLOC = 10,
    T_FALLOC_DONE = 11,
};
enum { S_FSYNC = 1, S_FDATASYNC = 2, S_SYNC_FILE_RANGE = 3, S_MSYNC = 4, S_SYNCFS = 5, S_SYNC = 6 };
#define F_DSYNC 1u   /* the write itself is synchronous (O_DSYNC/O_SYNC fd, RWF_DSYNC) */
#define F_CREATED 2u
#define F_DIR 4u

struct hdr {
    uint32_t magic;
    uint16_t type;
    uint16_t flags;
    uint64_t ts_ns;  /* CLOCK_MONOTONIC, same clock as Python's time.monotonic() */
    uint32_t pid;
    uint32_t tid;
    uint64_t opid;   /* per-process operation id: pairs an intent with its done */
    int32_t fd;
    uint32_t aux;
    int64_t off;
    int64_t len;
    int64_t result;
    uint32_t path_len;
    uint32_t data_len_hi;
    uint64_t data_len;
} __attribute__((packed));

#define FDMAX 65536
static char *fd_path[FDMAX];
static unsigned fd_flags[FDMAX];
static int log_fd = -1;
static char root[PATH_MAX];
static size_t root_len;
static uint64_t opseq;

struct map { void *addr; size_t len; off_t off; char *path; };
#define MAPMAX 256
static struct map maps[MAPMAX];
static pthread_mutex_t map_lock = PTHREAD_MUTEX_INITIALIZER;

#define REAL(name) static __typeof__(name) *real_##name; if (!real_##name) real_##name = dlsym(RTLD_NEXT, #name)

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

__attribute__((constructor)) static void pcshim_init(void) {
    const char *dir = getenv("PCSHIM_DIR"), *logp = getenv("PCSHIM_LOG");
    if (!dir || !logp) return;
    if (!realpath(dir, root)) { /* not created yet: use it as given */
        strncpy(root, dir, sizeof root - 1);
    }
    root_len = strlen(root);
    while (root_len > 1 && root[root_len - 1] == '/') root[--root_len] = 0;
    int fd = (int)syscall(SYS_openat, AT_FDCWD, logp, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) { fprintf(stderr, "pcshim: cannot open log %s: %s\n", logp, strerror(errno)); abort(); }
    /* keep the log fd out of the way of the program's own descriptors */
    int hi = (int)syscall(SYS_fcntl, fd, F_DUPFD_CLOEXEC, 900);
    if (hi >= 0) { syscall(SYS_close, fd); fd = hi; }
    log_fd = fd;
}

static void emit(struct hdr *h, const char *path, const struct iovec *data, int ndata) {
    if (log_fd < 0) return;
    struct iovec stack[66], *iov = stack;
    int n = 0;
    size_t plen = path ? strlen(path) : 0;
    uint64_t dlen = 0;
    for (int i = 0; i < ndata; i++) dlen += data[i].iov_len;
    h->magic = MAGIC;
    h->ts_ns = now_ns();
    h->pid = (uint32_t)getpid();
    h->tid = (uint32_t)syscall(SYS_gettid);
    h->path_len = (uint32_t)plen;
    h->data_len = dlen;
    h->data_len_hi = 0;
    if (ndata + 2 > 66) iov = malloc(sizeof(struct iovec) * (ndata + 2));
    if (!iov) abort();
    iov[n].iov_base = h; iov[n++].iov_len = sizeof *h;
    if (plen) { iov[n].iov_base = (void *)path; iov[n++].iov_len = plen; }
    for (int i = 0; i < ndata; i++) if (data[i].iov_len) iov[n++] = data[i];
    size_t total = sizeof *h + plen + dlen;
    /* one writev on an O_APPEND fd: atomic with respect to other appenders on Linux */
    ssize_t w = syscall(SYS_writev, log_fd, iov, n);
    if (iov != stack) free(iov);
    if (w < 0 || (size_t)w != total) {
        static const char msg[] = "pcshim: short or failed write to the log; aborting\n";
        syscall(SYS_write, 2, msg, sizeof msg - 1);
        abort();
    }
}

static int under_root(const char *p) {
    return root_len && strncmp(p, root, root_len) == 0 && (p[root_len] == '/' || p[root_len] == 0);
}

static const char *tracked(int fd) {
    if (log_fd < 0 || fd < 0 || fd >= FDMAX) return NULL;
    return __atomic_load_n(&fd_path[fd], __ATOMIC_ACQUIRE);
}

static void track_open(int fd, int oflags, int created) {
    if (log_fd < 0 || fd < 0 || fd >= FDMAX) return;
    char link[64], buf[PATH_MAX];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, buf, sizeof buf - 1);
    if (n <= 0) return;
    buf[n] = 0;
    char *old = __atomic_exchange_n(&fd_path[fd], NULL, __ATOMIC_ACQ_REL);
    free(old);
    if (!under_root(buf)) return;
    struct stat st;
    unsigned fl = 0;
    if (oflags & (O_DSYNC | O_SYNC)) fl |= F_DSYNC;
    if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) fl |= F_DIR;
    fd_flags[fd] = fl;
    __atomic_store_n(&fd_path[fd], strdup(buf), __ATOMIC_RELEASE);
    struct hdr h = {0};
    h.type = T_OPEN; h.fd = fd; h.off = oflags; h.result = fd;
    h.flags = (created ? F_CREATED : 0) | (fl & F_DIR);
    emit(&h, buf, NULL, 0);
}

static int exists_at(int dirfd, const char *path) {
    struct stat st;
    return fstatat(dirfd, path, &st, 0) == 0;
}

#define OPEN_BODY(call, dirfd)                                                          \
    mode_t mode = 0;                                                                    \
    if (flags & (O_CREAT | __O_TMPFILE)) { va_list ap; va_start(ap, flags); mode = va_arg(ap, mode_t); va_end(ap); } \
    int existed = (log_fd >= 0 && (flags & O_CREAT)) ? exists_at(dirfd, path) : 1;      \
    int fd = call;                                                                      \
    if (fd >= 0 && log_fd >= 0) { int e = errno; track_open(fd, flags, !existed); errno = e; } \
    return fd;

int open(const char *path, int flags, ...) { REAL(open); OPEN_BODY(real_open(path, flags, mode), AT_FDCWD) }
int open64(const char *path, int flags, ...) { REAL(open64); OPEN_BODY(real_open64(path, flags, mode), AT_FDCWD) }
int openat(int dirfd, const char *path, int flags, ...) { REAL(openat); OPEN_BODY(real_openat(dirfd, path, flags, mode), dirfd) }
int openat64(int dirfd, const char *path, int flags, ...) { REAL(openat64); OPEN_BODY(real_openat64(dirfd, path, flags, mode), dirfd) }
int creat(const char *path, mode_t mode) { return open(path, O_CREAT | O_WRONLY | O_TRUNC, mode); }
int creat64(const char *path, mode_t mode) { return open(path, O_CREAT | O_WRONLY | O_TRUNC, mode); }

int close(int fd) {
    REAL(close);
    const char *p = tracked(fd);
    if (p) {
        struct hdr h = {0};
        h.type = T_CLOSE; h.fd = fd;
        emit(&h, p, NULL, 0);
        char *old = __atomic_exchange_n(&fd_path[fd], NULL, __ATOMIC_ACQ_REL);
        free(old);
    }
    return real_close(fd);
}

static uint64_t next_op(void) { return __atomic_add_fetch(&opseq, 1, __ATOMIC_RELAXED); }

static off_t cur_offset(int fd) {
    int e = errno;
    off_t o;
    int fl = (int)syscall(SYS_fcntl, fd, F_GETFL);
    if (fl >= 0 && (fl & O_APPEND)) {
        struct stat st;
        o = fstat(fd, &st) == 0 ? st.st_size : -1;
    } else {
        o = (off_t)syscall(SYS_lseek, fd, 0, SEEK_CUR);
    }
    errno = e;
    return o;
}

static uint64_t write_intent(int fd, const char *p, off_t off, const struct iovec *iov, int n, unsigned extra) {
    struct hdr h = {0};
    h.type = T_WRITE; h.fd = fd; h.off = off; h.opid = next_op();
    h.flags = (uint16_t)((fd_flags[fd] & F_DSYNC) | extra);
    int64_t len = 0;
    for (int i = 0; i < n; i++) len += iov[i].iov_len;
    h.len = len;
    emit(&h, p, iov, n);
    return h.opid;
}

static void op_done(int fd, const char *p, int type, uint64_t opid, int64_t res) {
    struct hdr h = {0};
    h.type = (uint16_t)type; h.fd = fd; h.opid = opid; h.result = res;
    emit(&h, p, NULL, 0);
}

#define WRITE_WRAP(decl_call, offexpr, iovp, niov, extra)                      \
    const char *p = tracked(fd);                                               \
    if (!p) return decl_call;                                                  \
    uint64_t op = write_intent(fd, p, (offexpr), (iovp), (niov), (extra));     \
    ssize_t r = decl_call;                                                     \
    int e = errno;                                                             \
    op_done(fd, p, T_WRITE_DONE, op, r < 0 ? -e : r);                          \
    errno = e;                                                                 \
    return r;

ssize_t write(int fd, const void *buf, size_t n) {
    REAL(write);
    struct iovec v = {(void *)buf, n};
    WRITE_WRAP(real_write(fd, buf, n), cur_offset(fd), &v, 1, 0)
}
ssize_t pwrite(int fd, const void *buf, size_t n, off_t off) {
    REAL(pwrite);
    struct iovec v = {(void *)buf, n};
    WRITE_WRAP(real_pwrite(fd, buf, n, off), off, &v, 1, 0)
}
ssize_t pwrite64(int fd, const void *buf, size_t n, off64_t off) {
    REAL(pwrite64);
    struct iovec v = {(void *)buf, n};
    WRITE_WRAP(real_pwrite64(fd, buf, n, off), off, &v, 1, 0)
}
ssize_t writev(int fd, const struct iovec *iov, int cnt) {
    REAL(writev);
    WRITE_WRAP(real_writev(fd, iov, cnt), cur_offset(fd), iov, cnt, 0)
}
ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off) {
    REAL(pwritev);
    WRITE_WRAP(real_pwritev(fd, iov, cnt, off), off, iov, cnt, 0)
}
ssize_t pwritev64(int fd, const struct iovec *iov, int cnt, off64_t off) {
    REAL(pwritev64);
    WRITE_WRAP(real_pwritev64(fd, iov, cnt, off), off, iov, cnt, 0)
}
ssize_t pwritev2(int fd, const struct iovec *iov, int cnt, off_t off, int fl) {
    REAL(pwritev2);
    WRITE_WRAP(real_pwritev2(fd, iov, cnt, off, fl), off == -1 ? cur_offset(fd) : off, iov, cnt,
               (fl & (RWF_DSYNC | RWF_SYNC)) ? F_DSYNC : 0)
}
ssize_t pwritev64v2(int fd, const struct iovec *iov, int cnt, off64_t off, int fl) {
    REAL(pwritev64v2);
    WRITE_WRAP(real_pwritev64v2(fd, iov, cnt, off, fl), off == -1 ? cur_offset(fd) : off, iov, cnt,
               (fl & (RWF_DSYNC | RWF_SYNC)) ? F_DSYNC : 0)
}

#define SIZE_WRAP(rtype, donetype, call, offv, lenv)                             \
    const char *p = tracked(fd);                                               \
    if (!p) return call;                                                       \
    struct hdr h = {0};                                                        \
    h.type = rtype; h.fd = fd; h.off = (offv); h.len = (lenv); h.opid = next_op(); \
    emit(&h, p, NULL, 0);                                                      \
    int r = call;                                                              \
    int e = errno;                                                             \
    op_done(fd, p, donetype, h.opid, r < 0 ? -e : r);                          \
    errno = e;                                                                 \
    return r;

int ftruncate(int fd, off_t len) { REAL(ftruncate); SIZE_WRAP(T_TRUNC, T_TRUNC_DONE, real_ftruncate(fd, len), 0, len) }
int ftruncate64(int fd, off64_t len) { REAL(ftruncate64); SIZE_WRAP(T_TRUNC, T_TRUNC_DONE, real_ftruncate64(fd, len), 0, len) }
int fallocate(int fd, int mode, off_t off, off_t len) { REAL(fallocate); SIZE_WRAP(T_FALLOC, T_FALLOC_DONE, real_fallocate(fd, mode, off, len), off, len) }
int posix_fallocate(int fd, off_t off, off_t len) { REAL(posix_fallocate); SIZE_WRAP(T_FALLOC, T_FALLOC_DONE, real_posix_fallocate(fd, off, len), off, len) }

#define SYNC_WRAP(kind, call, path_override, offv, lenv)                        \
    const char *p = (path_override);                                           \
    if (!p) return call;                                                       \
    struct hdr h = {0};                                                        \
    h.type = T_SYNC; h.fd = fd; h.aux = (kind); h.off = (offv); h.len = (lenv); h.opid = next_op(); \
    emit(&h, p, NULL, 0);                                                      \
    int r = call;                                                              \
    int e = errno;                                                             \
    op_done(fd, p, T_SYNC_DONE, h.opid, r < 0 ? -e : r);                       \
    errno = e;                                                                 \
    return r;

int fsync(int fd) { REAL(fsync); SYNC_WRAP(S_FSYNC, real_fsync(fd), tracked(fd), 0, -1) }
int fdatasync(int fd) { REAL(fdatasync); SYNC_WRAP(S_FDATASYNC, real_fdatasync(fd), tracked(fd), 0, -1) }
int sync_file_range(int fd, off64_t off, off64_t n, unsigned int fl) {
    REAL(sync_file_range);
    SYNC_WRAP(S_SYNC_FILE_RANGE, real_sync_file_range(fd, off, n, fl), tracked(fd), off, n)
}
int syncfs(int fd) { REAL(syncfs); SYNC_WRAP(S_SYNCFS, real_syncfs(fd), (log_fd >= 0 ? root : NULL), 0, -1) }
void sync(void) {
    REAL(sync);
    if (log_fd < 0) { real_sync(); return; }
    struct hdr h = {0};
    h.type = T_SYNC; h.fd = -1; h.aux = S_SYNC; h.len = -1; h.opid = next_op();
    emit(&h, root, NULL, 0);
    real_sync();
    op_done(-1, root, T_SYNC_DONE, h.opid, 0);
}

static void *do_mmap_track(void *r, size_t len, int prot, int fl, int fd, off_t off) {
    const char *p = tracked(fd);
    if (r == MAP_FAILED || !p || !(prot & PROT_WRITE) || !(fl & MAP_SHARED)) return r;
    struct hdr h = {0};
    h.type = T_MMAP_SHARED_W; h.fd = fd; h.off = off; h.len = (int64_t)len;
    emit(&h, p, NULL, 0);
    pthread_mutex_lock(&map_lock);
    for (int i = 0; i < MAPMAX; i++)
        if (!maps[i].addr) { maps[i] = (struct map){r, len, off, strdup(p)}; break; }
    pthread_mutex_unlock(&map_lock);
    return r;
}
void *mmap(void *a, size_t len, int prot, int fl, int fd, off_t off) {
    REAL(mmap);
    int e;
    void *r = real_mmap(a, len, prot, fl, fd, off);
    e = errno; r = do_mmap_track(r, len, prot, fl, fd, off); errno = e;
    return r;
}
void *mmap64(void *a, size_t len, int prot, int fl, int fd, off64_t off) {
    REAL(mmap64);
    int e;
    void *r = real_mmap64(a, len, prot, fl, fd, off);
    e = errno; r = do_mmap_track(r, len, prot, fl, fd, off); errno = e;
    return r;
}
int msync(void *addr, size_t len, int fl) {
    REAL(msync);
    const char *mp = NULL;
    off_t foff = 0;
    if (log_fd >= 0) {
        pthread_mutex_lock(&map_lock);
        for (int i = 0; i < MAPMAX; i++) {
            char *b = maps[i].addr;
            if (b && (char *)addr >= b && (char *)addr < b + maps[i].len) {
                mp = maps[i].path; foff = maps[i].off + ((char *)addr - b); break;
            }
        }
        pthread_mutex_unlock(&map_lock);
    }
    int fd = -1;
    SYNC_WRAP(S_MSYNC, real_msync(addr, len, fl), mp, foff, (int64_t)len)
}
