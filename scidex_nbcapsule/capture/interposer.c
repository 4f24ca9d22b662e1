/*
 * The system-level capture layer: an LD_PRELOAD library that records which
 * files a process (and, through the inherited environment, its children)
 * reads, writes, renames and deletes.
 *
 * Built by scidex_nbcapsule/capture/interposer.py with
 *     cc -shared -fPIC -O2 -Wall -o X.so interposer.c -ldl
 *
 * Configuration, read once at load time:
 *   NBCAPSULE_TRACE_DIR   folder holding `events` (appended to) and `epoch`
 *                         (a uint64_t at offset 0, mmapped read-only);
 *                         without it every wrapper only forwards.
 *   NBCAPSULE_TRACE_SKIP  colon-separated absolute prefixes (ending in '/')
 *                         whose files are never recorded. The trace folder is
 *                         always skipped.
 *
 * Each record is four NUL-terminated fields written with one write() call:
 *   op ('r' read, 'w' write, 'a' update, 'm' rename, 'u' unlink), pid, path, target (rename: the new
 *   name; update: "MTIME:SIZE" when opened).
 *
 * Opens are recorded once per (op, path) and epoch, so a loop of 10,000 opens
 * of one file costs one record and 10,000 hash look-ups. Renames and unlinks
 * are always recorded, and make the next open of either path news again. Only successful calls are recorded, only regular files
 * are recorded for opens, and errno is left exactly as the real call set it.
 */

#undef _FORTIFY_SOURCE
#undef _FILE_OFFSET_BITS
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

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
#include <sys/types.h>
#include <unistd.h>

#ifndef O_TMPFILE
#define O_TMPFILE (020000000 | O_DIRECTORY)
#endif
#ifndef O_PATH
#define O_PATH 010000000
#endif
#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif

#define NB_EXPORT __attribute__((visibility("default")))
#define NB_TLS __thread __attribute__((tls_model("initial-exec")))

/* Longest path recorded; longer ones (rare, and beyond what the kernel takes in one call) are dropped. */
#define NB_PATH_MAX PATH_MAX
/* Room for op, pid and the NUL terminators of a record. */
#define NB_RECORD_EXTRA 96

/* ------------------------------------------------------------------ state */

/* 1 once the constructor found NBCAPSULE_TRACE_DIR and opened `events`. */
static int nb_active;
static int nb_events_fd = -1;
static dev_t nb_events_dev;
static ino_t nb_events_ino;
static char nb_events_path[NB_PATH_MAX];
static const volatile uint64_t *nb_epoch_ptr;

/* Skip prefixes, normalised, each ending in '/'; the trace folder is the first. */
static char **nb_skip;
static size_t *nb_skip_len;
static size_t nb_skip_count;

/* The cached current directory, refreshed when nb_cwd_gen moves (chdir, fchdir). */
static char nb_cwd[NB_PATH_MAX];
static size_t nb_cwd_len;
static int nb_cwd_ok;
static unsigned long nb_cwd_gen = 1;
static unsigned long nb_cwd_seen;
static char nb_cwd_lock;

/* (op, path, epoch) already recorded: 64-bit FNV-1a hashes, open addressing (0 empty, 1 forgotten). */
#define NB_SLOTS 8192
#define NB_MASK (NB_SLOTS - 1)
#define NB_FULL (NB_SLOTS * 3 / 4)
#define NB_PROBES 64
static uint64_t nb_table[NB_SLOTS];
static unsigned nb_table_count;
static uint64_t nb_table_epoch;

/* Per thread: inside our own code (never record), and paused by the package. */
static NB_TLS int nb_in_hook;
static NB_TLS int nb_paused;

/* ------------------------------------------------------ the real functions */

typedef int (*open_fn)(const char *, int, ...);
typedef int (*openat_fn)(int, const char *, int, ...);
typedef int (*open2_fn)(const char *, int);
typedef int (*openat2_fn)(int, const char *, int);
typedef int (*creat_fn)(const char *, mode_t);
typedef FILE *(*fopen_fn)(const char *, const char *);
typedef FILE *(*freopen_fn)(const char *, const char *, FILE *);
typedef int (*rename_fn)(const char *, const char *);
typedef int (*renameat_fn)(int, const char *, int, const char *);
typedef int (*renameat2_fn)(int, const char *, int, const char *, unsigned int);
typedef int (*unlink_fn)(const char *);
typedef int (*unlinkat_fn)(int, const char *, int);
typedef int (*chdir_fn)(const char *);
typedef int (*fchdir_fn)(int);

static void *nb_resolve(void **slot, const char *name)
{
    void *fn = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
    if (!fn) {
        int saved = errno;
        fn = dlsym(RTLD_NEXT, name);
        errno = saved;
        __atomic_store_n(slot, fn, __ATOMIC_RELEASE);
    }
    return fn;
}

#define NB_REAL(type, name)                                                     \
    static void *real_##name##_slot;                                            \
    static type real_##name(void) { return (type)nb_resolve(&real_##name##_slot, #name); }

NB_REAL(open_fn, open)
NB_REAL(open_fn, open64)
NB_REAL(openat_fn, openat)
NB_REAL(openat_fn, openat64)
NB_REAL(open2_fn, __open_2)
NB_REAL(open2_fn, __open64_2)
NB_REAL(openat2_fn, __openat_2)
NB_REAL(openat2_fn, __openat64_2)
NB_REAL(creat_fn, creat)
NB_REAL(creat_fn, creat64)
NB_REAL(fopen_fn, fopen)
NB_REAL(fopen_fn, fopen64)
NB_REAL(freopen_fn, freopen)
NB_REAL(freopen_fn, freopen64)
NB_REAL(rename_fn, rename)
NB_REAL(renameat_fn, renameat)
NB_REAL(renameat2_fn, renameat2)
NB_REAL(unlink_fn, unlink)
NB_REAL(unlinkat_fn, unlinkat)
NB_REAL(chdir_fn, chdir)
NB_REAL(fchdir_fn, fchdir)

/* ------------------------------------------------------------------- paths */

static void nb_lock(char *lock)
{
    while (__atomic_test_and_set(lock, __ATOMIC_ACQUIRE))
        ;
}

static void nb_unlock(char *lock)
{
    __atomic_clear(lock, __ATOMIC_RELEASE);
}

/*
 * Appends the components of `rel` to the normalised absolute path out[0..*len)
 * ("" stands for the root): empty and "." components vanish, ".." removes the
 * last component (never above the root). No symlink is resolved.
 */
static int nb_push(char *out, size_t *len, size_t cap, const char *rel)
{
    const char *p = rel;
    size_t n = *len;
    while (*p) {
        while (*p == '/')
            p++;
        if (!*p)
            break;
        const char *start = p;
        while (*p && *p != '/')
            p++;
        size_t clen = (size_t)(p - start);
        if (clen == 1 && start[0] == '.')
            continue;
        if (clen == 2 && start[0] == '.' && start[1] == '.') {
            while (n > 0 && out[n - 1] != '/')
                n--;
            if (n > 0)
                n--;
            continue;
        }
        if (n + 1 + clen + 1 > cap)
            return -1;
        out[n++] = '/';
        memcpy(out + n, start, clen);
        n += clen;
    }
    *len = n;
    return 0;
}

/* Copies an absolute base folder as the start of a normalised path (trailing '/' dropped). */
static int nb_base(char *out, size_t *len, size_t cap, const char *base, size_t blen)
{
    if (blen == 0 || base[0] != '/')
        return -1;
    while (blen > 0 && base[blen - 1] == '/')
        blen--;
    if (blen + 1 > cap)
        return -1;
    memmove(out, base, blen); /* base may already sit in out (readlink) */
    *len = blen;
    return 0;
}

/* The process's current directory, from the cache (getcwd only after a chdir). */
static int nb_cwd_into(char *out, size_t *len, size_t cap)
{
    int rc = -1;
    unsigned long gen = __atomic_load_n(&nb_cwd_gen, __ATOMIC_ACQUIRE);
    nb_lock(&nb_cwd_lock);
    if (nb_cwd_seen != gen || !nb_cwd_ok) {
        nb_cwd_seen = gen;
        nb_cwd_ok = getcwd(nb_cwd, sizeof nb_cwd) != NULL && nb_cwd[0] == '/';
        nb_cwd_len = nb_cwd_ok ? strlen(nb_cwd) : 0;
    }
    if (nb_cwd_ok)
        rc = nb_base(out, len, cap, nb_cwd, nb_cwd_len);
    nb_unlock(&nb_cwd_lock);
    return rc;
}

/* The folder an open descriptor refers to, as the kernel names it. */
static int nb_dirfd_into(int dirfd, char *out, size_t *len, size_t cap)
{
    char link[48];
    char *q = link + sizeof link;
    unsigned v = (unsigned)dirfd;
    *--q = '\0';
    do {
        *--q = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    static const char prefix[] = "/proc/self/fd/";
    q -= sizeof prefix - 1;
    memcpy(q, prefix, sizeof prefix - 1);
    ssize_t n = readlink(q, out, cap - 1);
    if (n <= 0 || (size_t)n >= cap - 1)
        return -1;
    out[n] = '\0';
    return nb_base(out, len, cap, out, (size_t)n);
}

/* Writes the absolute, lexically normalised form of (dirfd, path) to out; returns its length or -1. */
static ssize_t nb_absolute(int dirfd, const char *path, char *out, size_t cap)
{
    size_t len = 0;
    if (!path || !*path)
        return -1;
    if (path[0] != '/') {
        int rc = dirfd == AT_FDCWD ? nb_cwd_into(out, &len, cap) : nb_dirfd_into(dirfd, out, &len, cap);
        if (rc != 0)
            return -1;
    }
    if (nb_push(out, &len, cap, path) != 0)
        return -1;
    if (len == 0)
        out[len++] = '/';
    out[len] = '\0';
    return (ssize_t)len;
}

/* True for paths never recorded: under a skip prefix, or inside a folder whose name begins with '.'. */
static int nb_excluded(const char *path, size_t len)
{
    size_t last = len;
    while (last > 0 && path[last - 1] != '/')
        last--;
    /* path[last - 1] is the final '/'; any "/." before it starts a hidden folder */
    for (size_t i = 0; i + 1 < last; i++)
        if (path[i] == '/' && path[i + 1] == '.')
            return 1;
    for (size_t i = 0; i < nb_skip_count; i++)
        if (len >= nb_skip_len[i] && memcmp(path, nb_skip[i], nb_skip_len[i]) == 0)
            return 1;
    return 0;
}

/* ---------------------------------------------------------- de-duplication */

static void nb_clear_table(void)
{
    for (size_t i = 0; i < NB_SLOTS; i++)
        __atomic_store_n(&nb_table[i], 0, __ATOMIC_RELAXED);
    __atomic_store_n(&nb_table_count, 0, __ATOMIC_RELAXED);
}

static uint64_t nb_current_epoch(void)
{
    return nb_epoch_ptr ? __atomic_load_n(nb_epoch_ptr, __ATOMIC_ACQUIRE) : 0;
}

#define NB_EMPTY 0
#define NB_GONE 1 /* a forgotten entry: keeps probe chains intact */

static uint64_t nb_hash(char op, const char *path, size_t len, uint64_t epoch)
{
    uint64_t h = 1469598103934665603ULL;
    h = (h ^ (unsigned char)op) * 1099511628211ULL;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)path[i]) * 1099511628211ULL;
    for (int i = 0; i < 8; i++)
        h = (h ^ ((epoch >> (8 * i)) & 0xff)) * 1099511628211ULL;
    return h > NB_GONE ? h : h + 2;
}

static inline size_t nb_slot(uint64_t h)
{
    return (size_t)(h ^ (h >> 32)) & NB_MASK;
}

/* The epoch the table is filled under, clearing it first when the package has moved on. */
static uint64_t nb_table_sync(void)
{
    uint64_t epoch = nb_current_epoch();
    uint64_t filled = __atomic_load_n(&nb_table_epoch, __ATOMIC_ACQUIRE);
    if (filled != epoch && __atomic_compare_exchange_n(&nb_table_epoch, &filled, epoch, 0, __ATOMIC_ACQ_REL,
                                                       __ATOMIC_ACQUIRE))
        nb_clear_table();
    return epoch;
}

/*
 * 1 when (op, path) was already recorded in the current epoch, else marks it
 * as recorded and returns 0. The epoch is part of the hash, so a clear that
 * races with an insert can only cause an extra record, never a missing one.
 */
static int nb_seen(char op, const char *path, size_t len)
{
    uint64_t h = nb_hash(op, path, len, nb_table_sync());
    if (__atomic_load_n(&nb_table_count, __ATOMIC_RELAXED) >= NB_FULL)
        nb_clear_table();
    for (int attempt = 0; attempt < 2; attempt++) {
        size_t i = nb_slot(h);
        for (int probe = 0; probe < NB_PROBES; probe++, i = (i + 1) & NB_MASK) {
            uint64_t cur = __atomic_load_n(&nb_table[i], __ATOMIC_RELAXED);
            if (cur == h)
                return 1;
            if (cur == NB_EMPTY) {
                uint64_t expected = NB_EMPTY;
                if (__atomic_compare_exchange_n(&nb_table[i], &expected, h, 0, __ATOMIC_RELAXED,
                                                __ATOMIC_RELAXED)) {
                    __atomic_add_fetch(&nb_table_count, 1, __ATOMIC_RELAXED);
                    return 0;
                }
                if (expected == h)
                    return 1;
            }
        }
        nb_clear_table(); /* a crowded neighbourhood: start over */
    }
    return 0;
}

/* A path was renamed or deleted: its next read or write is news again, even in this epoch. */
static void nb_forget(const char *path, size_t len)
{
    uint64_t epoch = nb_table_sync();
    static const char ops[] = {'r', 'w', 'a'};
    for (size_t k = 0; k < sizeof ops; k++) {
        uint64_t h = nb_hash(ops[k], path, len, epoch);
        size_t i = nb_slot(h);
        for (int probe = 0; probe < NB_PROBES; probe++, i = (i + 1) & NB_MASK) {
            uint64_t cur = __atomic_load_n(&nb_table[i], __ATOMIC_RELAXED);
            if (cur == NB_EMPTY)
                break;
            if (cur == h) {
                __atomic_compare_exchange_n(&nb_table[i], &cur, NB_GONE, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
                break;
            }
        }
    }
}

/* ----------------------------------------------------------------- records */

/* The events descriptor, reopened when the process closed or replaced it (closerange, dup2). */
static int nb_events(void)
{
    struct stat st;
    int fd = __atomic_load_n(&nb_events_fd, __ATOMIC_ACQUIRE);
    if (fd >= 0 && fstat(fd, &st) == 0 && st.st_dev == nb_events_dev && st.st_ino == nb_events_ino)
        return fd;
    int nfd = real_open()(nb_events_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (nfd < 0)
        return -1;
    /* keep clear of the low numbers programs expect open() to hand out next */
    int high = fcntl(nfd, F_DUPFD_CLOEXEC, 100);
    if (high >= 0) {
        close(nfd);
        nfd = high;
    }
    if (fstat(nfd, &st) != 0) {
        close(nfd);
        return -1;
    }
    nb_events_dev = st.st_dev;
    nb_events_ino = st.st_ino;
    __atomic_store_n(&nb_events_fd, nfd, __ATOMIC_RELEASE);
    return nfd;
}

/* Starts a record in buf: op, NUL, pid, NUL. Returns its length. */
static size_t nb_head(char *buf, char op)
{
    char digits[24];
    size_t n = 0, k = 0;
    unsigned long pid = (unsigned long)getpid();
    do {
        digits[k++] = (char)('0' + pid % 10);
        pid /= 10;
    } while (pid);
    buf[n++] = op;
    buf[n++] = '\0';
    while (k)
        buf[n++] = digits[--k];
    buf[n++] = '\0';
    return n;
}

static void nb_write(const char *buf, size_t len)
{
    int fd = nb_events();
    if (fd < 0)
        return;
    ssize_t n;
    do
        n = write(fd, buf, len);
    while (n < 0 && errno == EINTR);
}

/* Records an open of (dirfd, path) that returned fd (or -1 when only the FILE* is known). */
static void nb_note_open(char op, int dirfd, const char *path, int fd)
{
    char buf[NB_PATH_MAX + NB_RECORD_EXTRA];
    size_t head = nb_head(buf, op);
    ssize_t len = nb_absolute(dirfd, path, buf + head, NB_PATH_MAX);
    if (len < 0)
        return;
    const char *abs = buf + head;
    if (nb_excluded(abs, (size_t)len) || nb_seen(op, abs, (size_t)len))
        return;
    struct stat st;
    if (fd >= 0 && fstat(fd, &st) == 0 && !S_ISREG(st.st_mode))
        return;
    size_t n = head + (size_t)len + 1;
    if (op == 'a' && fd >= 0) {
        /* opened for update: whether it was written is told later by a changed mtime or size */
        size_t room = sizeof buf - n - 1;
        int w = snprintf(buf + n, room, "%lld.%09ld:%lld", (long long)st.st_mtim.tv_sec, (long)st.st_mtim.tv_nsec,
                         (long long)st.st_size);
        n += (w > 0 && (size_t)w < room) ? (size_t)w : 0;
    }
    buf[n++] = '\0';
    nb_write(buf, n);
}

/* Records a rename (op 'm'), an unlink (op 'u', newpath NULL) or an exchange ('w'); never de-duplicated. */
static void nb_note_change(char op, int olddirfd, const char *oldpath, int newdirfd, const char *newpath)
{
    char buf[2 * NB_PATH_MAX + NB_RECORD_EXTRA];
    size_t head = nb_head(buf, op);
    ssize_t len1 = nb_absolute(olddirfd, oldpath, buf + head, NB_PATH_MAX);
    if (len1 < 0)
        return;
    size_t n = head + (size_t)len1 + 1;
    int skip = nb_excluded(buf + head, (size_t)len1);
    nb_forget(buf + head, (size_t)len1);
    if (newpath) {
        ssize_t len2 = nb_absolute(newdirfd, newpath, buf + n, NB_PATH_MAX);
        if (len2 < 0)
            return;
        /* a rename into or out of a skipped place still changes the other side */
        skip = skip && nb_excluded(buf + n, (size_t)len2);
        nb_forget(buf + n, (size_t)len2);
        n += (size_t)len2 + 1;
    } else {
        buf[n++] = '\0';
    }
    if (!skip)
        nb_write(buf, n);
}

/* ------------------------------------------------------------- set-up */

static void nb_add_skip(char *buf_out, size_t *used, const char *prefix, size_t plen)
{
    char tmp[NB_PATH_MAX];
    if (plen == 0 || plen >= sizeof tmp)
        return;
    memcpy(tmp, prefix, plen);
    tmp[plen] = '\0';
    char *dst = buf_out + *used;
    ssize_t len = nb_absolute(AT_FDCWD, tmp, dst, NB_PATH_MAX);
    if (len < 0)
        return;
    if (!(len == 1 && dst[0] == '/'))
        dst[len++] = '/';
    dst[len] = '\0';
    nb_skip[nb_skip_count] = dst;
    nb_skip_len[nb_skip_count] = (size_t)len;
    nb_skip_count++;
    *used += (size_t)len + 1;
}

static void nb_after_fork_child(void)
{
    /* the thread that held the lock did not survive the fork */
    __atomic_clear(&nb_cwd_lock, __ATOMIC_RELEASE);
    nb_clear_table();
}

__attribute__((constructor)) static void nb_init(void)
{
    int saved = errno;
    nb_in_hook = 1;
    const char *dir = getenv("NBCAPSULE_TRACE_DIR");
    if (!dir || !*dir)
        goto done;

    char absdir[NB_PATH_MAX];
    ssize_t dlen = nb_absolute(AT_FDCWD, dir, absdir, sizeof absdir - 16);
    if (dlen < 0)
        goto done;

    const char *skip = getenv("NBCAPSULE_TRACE_SKIP");
    size_t count = 1, bytes = (size_t)dlen + 2;
    if (skip)
        for (const char *p = skip; *p; p++) {
            count += *p == ':';
        }
    if (skip)
        count += 1;
    /* normalised prefixes are at most NB_PATH_MAX + 1 bytes each */
    bytes += count * (NB_PATH_MAX + 2);
    char *store = malloc(bytes);
    nb_skip = malloc(count * sizeof *nb_skip);
    nb_skip_len = malloc(count * sizeof *nb_skip_len);
    if (!store || !nb_skip || !nb_skip_len)
        goto done;
    size_t used = 0;
    nb_add_skip(store, &used, absdir, (size_t)dlen);
    if (skip) {
        const char *p = skip;
        while (*p) {
            const char *end = strchr(p, ':');
            size_t plen = end ? (size_t)(end - p) : strlen(p);
            if (plen && p[0] == '/')
                nb_add_skip(store, &used, p, plen);
            if (!end)
                break;
            p = end + 1;
        }
    }

    memcpy(nb_events_path, absdir, (size_t)dlen);
    memcpy(nb_events_path + dlen, "/events", sizeof "/events");
    if (nb_events() < 0)
        goto done;

    char epoch_path[NB_PATH_MAX];
    memcpy(epoch_path, absdir, (size_t)dlen);
    memcpy(epoch_path + dlen, "/epoch", sizeof "/epoch");
    int efd = real_open()(epoch_path, O_RDONLY | O_CLOEXEC);
    if (efd >= 0) {
        struct stat st;
        if (fstat(efd, &st) == 0 && st.st_size >= (off_t)sizeof(uint64_t)) {
            void *map = mmap(NULL, sizeof(uint64_t), PROT_READ, MAP_SHARED, efd, 0);
            if (map != MAP_FAILED)
                nb_epoch_ptr = map;
        }
        close(efd);
    }
    nb_table_epoch = nb_current_epoch();
    pthread_atfork(NULL, NULL, nb_after_fork_child);
    __atomic_store_n(&nb_active, 1, __ATOMIC_RELEASE);
done:
    nb_in_hook = 0;
    errno = saved;
}

/* ------------------------------------------------------------- exports */

/* While on, the calling thread's calls are not recorded: the package copying and hashing files itself. */
NB_EXPORT void nbcapsule_trace_pause(int on)
{
    nb_paused = on != 0;
}

/* 1 when this process records (NBCAPSULE_TRACE_DIR was usable) and the calling thread is not paused. */
NB_EXPORT int nbcapsule_trace_active(void)
{
    return __atomic_load_n(&nb_active, __ATOMIC_ACQUIRE) && !nb_paused;
}

/* ------------------------------------------------------------- wrappers */

static inline int nb_tracing(void)
{
    return __atomic_load_n(&nb_active, __ATOMIC_RELAXED) && !nb_in_hook && !nb_paused;
}

static inline int nb_needs_mode(int flags)
{
    return (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE;
}

/* 'w' opened to write; 'a' opened for update (read-write without truncating, as SQLite and HDF5 "r+" do),
 * which is a write only if the file then changes; 'r' read only. */
static inline char nb_open_op(int flags)
{
    if ((flags & (O_TRUNC | O_APPEND)) || (flags & O_ACCMODE) == O_WRONLY)
        return 'w';
    return ((flags & O_ACCMODE) == O_RDWR || (flags & O_CREAT)) ? 'a' : 'r';
}

static char nb_fopen_op(const char *mode)
{
    char op = 'r';
    for (const char *p = mode; p && *p && *p != ','; p++) {
        if (*p == 'w' || *p == 'a')
            return 'w';
        if (*p == '+')
            op = 'a';
    }
    return op;
}

static void nb_after_open(int dirfd, const char *path, int flags, int fd)
{
    if (fd < 0 || !nb_tracing() || (flags & (O_DIRECTORY | O_PATH)))
        return;
    int saved = errno;
    nb_in_hook = 1;
    nb_note_open(nb_open_op(flags), dirfd, path, fd);
    nb_in_hook = 0;
    errno = saved;
}

static void nb_after_fopen(const char *path, const char *mode, FILE *fp)
{
    if (!fp || !path || !nb_tracing())
        return;
    int saved = errno;
    nb_in_hook = 1;
    nb_note_open(nb_fopen_op(mode), AT_FDCWD, path, fileno(fp));
    nb_in_hook = 0;
    errno = saved;
}

static void nb_after_change(int rc, char op, int olddirfd, const char *oldpath, int newdirfd, const char *newpath)
{
    if (rc != 0 || !nb_tracing())
        return;
    int saved = errno;
    nb_in_hook = 1;
    nb_note_change(op, olddirfd, oldpath, newdirfd, newpath);
    nb_in_hook = 0;
    errno = saved;
}

#define NB_MISSING(ret)                                                         \
    do {                                                                        \
        errno = ENOSYS;                                                         \
        return ret;                                                             \
    } while (0)

#define NB_MODE_ARG(flags, last)                                                \
    mode_t mode = 0;                                                            \
    if (nb_needs_mode(flags)) {                                                 \
        va_list ap;                                                             \
        va_start(ap, last);                                                     \
        mode = (mode_t)va_arg(ap, int);                                         \
        va_end(ap);                                                             \
    }

NB_EXPORT int open(const char *path, int flags, ...)
{
    NB_MODE_ARG(flags, flags)
    open_fn fn = real_open();
    if (!fn)
        NB_MISSING(-1);
    int fd = fn(path, flags, mode);
    nb_after_open(AT_FDCWD, path, flags, fd);
    return fd;
}

NB_EXPORT int open64(const char *path, int flags, ...)
{
    NB_MODE_ARG(flags, flags)
    open_fn fn = real_open64();
    if (!fn)
        NB_MISSING(-1);
    int fd = fn(path, flags, mode);
    nb_after_open(AT_FDCWD, path, flags, fd);
    return fd;
}

NB_EXPORT int openat(int dirfd, const char *path, int flags, ...)
{
    NB_MODE_ARG(flags, flags)
    openat_fn fn = real_openat();
    if (!fn)
        NB_MISSING(-1);
    int fd = fn(dirfd, path, flags, mode);
    nb_after_open(dirfd, path, flags, fd);
    return fd;
}

NB_EXPORT int openat64(int dirfd, const char *path, int flags, ...)
{
    NB_MODE_ARG(flags, flags)
    openat_fn fn = real_openat64();
    if (!fn)
        NB_MISSING(-1);
    int fd = fn(dirfd, path, flags, mode);
    nb_after_open(dirfd, path, flags, fd);
    return fd;
}

/* The _FORTIFY_SOURCE entry points (flags without O_CREAT known only at run time). */
NB_EXPORT int __open_2(const char *path, int flags)
{
    open2_fn fn = real___open_2();
    if (!fn)
        NB_MISSING(-1);
    int fd = fn(path, flags);
    nb_after_open(AT_FDCWD, path, flags, fd);
    return fd;
}

NB_EXPORT int __open64_2(const char *path, int flags)
{
    open2_fn fn = real___open64_2();
    if (!fn)
        NB_MISSING(-1);
    int fd = fn(path, flags);
    nb_after_open(AT_FDCWD, path, flags, fd);
    return fd;
}

NB_EXPORT int __openat_2(int dirfd, const char *path, int flags)
{
    openat2_fn fn = real___openat_2();
    if (!fn)
        NB_MISSING(-1);
    int fd = fn(dirfd, path, flags);
    nb_after_open(dirfd, path, flags, fd);
    return fd;
}

NB_EXPORT int __openat64_2(int dirfd, const char *path, int flags)
{
    openat2_fn fn = real___openat64_2();
    if (!fn)
        NB_MISSING(-1);
    int fd = fn(dirfd, path, flags);
    nb_after_open(dirfd, path, flags, fd);
    return fd;
}

NB_EXPORT int creat(const char *path, mode_t mode)
{
    creat_fn fn = real_creat();
    if (!fn)
        NB_MISSING(-1);
    int fd = fn(path, mode);
    nb_after_open(AT_FDCWD, path, O_WRONLY | O_CREAT | O_TRUNC, fd);
    return fd;
}

NB_EXPORT int creat64(const char *path, mode_t mode)
{
    creat_fn fn = real_creat64();
    if (!fn)
        NB_MISSING(-1);
    int fd = fn(path, mode);
    nb_after_open(AT_FDCWD, path, O_WRONLY | O_CREAT | O_TRUNC, fd);
    return fd;
}

NB_EXPORT FILE *fopen(const char *path, const char *mode)
{
    fopen_fn fn = real_fopen();
    if (!fn)
        NB_MISSING(NULL);
    FILE *fp = fn(path, mode);
    nb_after_fopen(path, mode, fp);
    return fp;
}

NB_EXPORT FILE *fopen64(const char *path, const char *mode)
{
    fopen_fn fn = real_fopen64();
    if (!fn)
        NB_MISSING(NULL);
    FILE *fp = fn(path, mode);
    nb_after_fopen(path, mode, fp);
    return fp;
}

NB_EXPORT FILE *freopen(const char *path, const char *mode, FILE *stream)
{
    freopen_fn fn = real_freopen();
    if (!fn)
        NB_MISSING(NULL);
    FILE *fp = fn(path, mode, stream);
    nb_after_fopen(path, mode, fp);
    return fp;
}

NB_EXPORT FILE *freopen64(const char *path, const char *mode, FILE *stream)
{
    freopen_fn fn = real_freopen64();
    if (!fn)
        NB_MISSING(NULL);
    FILE *fp = fn(path, mode, stream);
    nb_after_fopen(path, mode, fp);
    return fp;
}

NB_EXPORT int rename(const char *oldpath, const char *newpath)
{
    rename_fn fn = real_rename();
    if (!fn)
        NB_MISSING(-1);
    int rc = fn(oldpath, newpath);
    nb_after_change(rc, 'm', AT_FDCWD, oldpath, AT_FDCWD, newpath);
    return rc;
}

NB_EXPORT int renameat(int olddirfd, const char *oldpath, int newdirfd, const char *newpath)
{
    renameat_fn fn = real_renameat();
    if (!fn)
        NB_MISSING(-1);
    int rc = fn(olddirfd, oldpath, newdirfd, newpath);
    nb_after_change(rc, 'm', olddirfd, oldpath, newdirfd, newpath);
    return rc;
}

NB_EXPORT int renameat2(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, unsigned int flags)
{
    renameat2_fn fn = real_renameat2();
    if (!fn)
        NB_MISSING(-1);
    int rc = fn(olddirfd, oldpath, newdirfd, newpath, flags);
    if (flags & RENAME_EXCHANGE) {
        /* both names stay and now hold new content: two writes, not a move */
        nb_after_change(rc, 'w', olddirfd, oldpath, AT_FDCWD, NULL);
        nb_after_change(rc, 'w', newdirfd, newpath, AT_FDCWD, NULL);
    } else {
        nb_after_change(rc, 'm', olddirfd, oldpath, newdirfd, newpath);
    }
    return rc;
}

NB_EXPORT int unlink(const char *path)
{
    unlink_fn fn = real_unlink();
    if (!fn)
        NB_MISSING(-1);
    int rc = fn(path);
    nb_after_change(rc, 'u', AT_FDCWD, path, AT_FDCWD, NULL);
    return rc;
}

NB_EXPORT int unlinkat(int dirfd, const char *path, int flags)
{
    unlinkat_fn fn = real_unlinkat();
    if (!fn)
        NB_MISSING(-1);
    int rc = fn(dirfd, path, flags);
    if (!(flags & AT_REMOVEDIR)) /* removing a folder (rmdir) removes no file */
        nb_after_change(rc, 'u', dirfd, path, AT_FDCWD, NULL);
    return rc;
}

NB_EXPORT int chdir(const char *path)
{
    chdir_fn fn = real_chdir();
    if (!fn)
        NB_MISSING(-1);
    int rc = fn(path);
    if (rc == 0)
        __atomic_add_fetch(&nb_cwd_gen, 1, __ATOMIC_RELEASE);
    return rc;
}

NB_EXPORT int fchdir(int fd)
{
    fchdir_fn fn = real_fchdir();
    if (!fn)
        NB_MISSING(-1);
    int rc = fn(fd);
    if (rc == 0)
        __atomic_add_fetch(&nb_cwd_gen, 1, __ATOMIC_RELEASE);
    return rc;
}
