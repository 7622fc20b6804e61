// delay-relay: a TCP relay that holds every piece of data for a fixed time before passing it on, in
// each direction: S3-like round trips on one machine (this kernel has no netem). It also keeps a
// timeline of the bytes it carried from the server, in 10 ms buckets, to tell how long the link sat idle.
//
//   delay-relay LISTEN_ADDR LISTEN_PORT TARGET_ADDR TARGET_PORT DELAY_MS STATS_FILE
//
// Each connection gets two threads per direction (a reader that stamps each piece with its arrival
// time, a writer that sends it once that time plus the delay has passed). SIGUSR1 writes the stats
// (bytes each way, and the non-empty buckets of the timeline) to STATS_FILE and clears them.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PIECE (64 * 1024)
#define BUCKETS (200 * 1000 / 10) /* 200 s of 10 ms buckets */

static long delay_ns;
static const char *stats_path;
static _Atomic uint64_t bytes_down, bytes_up;      /* from the target / to the target */
static _Atomic uint32_t timeline[BUCKETS];          /* bytes from the target per 10 ms since the epoch below */
static _Atomic int64_t epoch_ns;                    /* the timeline's start (reset by SIGUSR1) */
static struct sockaddr_in target;

static int64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

struct piece { struct piece *next; int64_t due; int len; char data[PIECE]; };

struct direction {
    int from, to, down;
    pthread_mutex_t lock;
    pthread_cond_t ready;
    struct piece *head, *tail;
    int closed;
    struct conn *conn;
};

struct conn { struct direction d[2]; _Atomic int left; };

/* The last of a connection's four threads closes it. */
static void finish(struct conn *k) {
    if (atomic_fetch_sub(&k->left, 1) != 1) return;
    close(k->d[0].from);
    close(k->d[1].from);
    free(k);
}

static void *reader(void *arg) {
    struct direction *d = arg;
    for (;;) {
        struct piece *p = malloc(sizeof *p);
        ssize_t n = read(d->from, p->data, PIECE);
        if (n <= 0) { free(p); break; }
        p->len = (int)n;
        p->due = now_ns() + delay_ns;
        p->next = NULL;
        pthread_mutex_lock(&d->lock);
        if (d->tail) d->tail->next = p; else d->head = p;
        d->tail = p;
        pthread_cond_signal(&d->ready);
        pthread_mutex_unlock(&d->lock);
    }
    pthread_mutex_lock(&d->lock);
    d->closed = 1;
    pthread_cond_signal(&d->ready);
    pthread_mutex_unlock(&d->lock);
    finish(d->conn);
    return NULL;
}

static void *writer(void *arg) {
    struct direction *d = arg;
    for (;;) {
        pthread_mutex_lock(&d->lock);
        while (!d->head && !d->closed) pthread_cond_wait(&d->ready, &d->lock);
        struct piece *p = d->head;
        if (p) { d->head = p->next; if (!d->head) d->tail = NULL; }
        pthread_mutex_unlock(&d->lock);
        if (!p) break;
        int64_t wait = p->due - now_ns();
        if (wait > 0) {
            struct timespec t = { wait / 1000000000, wait % 1000000000 };
            nanosleep(&t, NULL);
        }
        int off = 0, failed = 0;
        while (off < p->len) {
            ssize_t n = write(d->to, p->data + off, p->len - off);
            if (n <= 0) { failed = 1; break; }
            off += (int)n;
        }
        if (d->down) {
            atomic_fetch_add(&bytes_down, (uint64_t)p->len);
            int64_t b = (now_ns() - atomic_load(&epoch_ns)) / 10000000;
            if (b >= 0 && b < BUCKETS) atomic_fetch_add(&timeline[b], (uint32_t)p->len);
        } else atomic_fetch_add(&bytes_up, (uint64_t)p->len);
        free(p);
        if (failed) break;
    }
    shutdown(d->to, SHUT_WR);
    finish(d->conn);
    return NULL;
}

static void start(struct direction *d) {
    pthread_t r, w;
    pthread_create(&r, NULL, reader, d);
    pthread_create(&w, NULL, writer, d);
    pthread_detach(r);
    pthread_detach(w);
}

static void dump(int sig) {
    (void)sig;
    FILE *f = fopen(stats_path, "w");
    if (!f) return;
    int64_t e = atomic_load(&epoch_ns);
    int last = (int)((now_ns() - e) / 10000000);
    if (last > BUCKETS) last = BUCKETS;
    fprintf(f, "down %llu\nup %llu\nbuckets %d\n", (unsigned long long)atomic_load(&bytes_down), (unsigned long long)atomic_load(&bytes_up), last);
    for (int i = 0; i < last; i++) fprintf(f, "%u\n", atomic_exchange(&timeline[i], 0));
    fclose(f);
    atomic_store(&bytes_down, 0);
    atomic_store(&bytes_up, 0);
    atomic_store(&epoch_ns, now_ns());
}

int main(int argc, char **argv) {
    if (argc != 7) { fprintf(stderr, "usage: %s LISTEN_ADDR LISTEN_PORT TARGET_ADDR TARGET_PORT DELAY_MS STATS_FILE\n", argv[0]); return 2; }
    delay_ns = atol(argv[5]) * 1000000L;
    stats_path = argv[6];
    atomic_store(&epoch_ns, now_ns());
    signal(SIGPIPE, SIG_IGN);
    signal(SIGUSR1, dump);
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2])) };
    inet_pton(AF_INET, argv[1], &a.sin_addr);
    target.sin_family = AF_INET;
    target.sin_port = htons((uint16_t)atoi(argv[4]));
    inet_pton(AF_INET, argv[3], &target.sin_addr);
    if (bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 256)) { perror("listen"); return 1; }
    printf("ready\n");
    fflush(stdout);
    for (;;) {
        int c = accept(l, NULL, NULL);
        if (c < 0) { if (errno == EINTR) continue; perror("accept"); return 1; }
        int t = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(t, (struct sockaddr *)&target, sizeof target)) { close(c); close(t); continue; }
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        setsockopt(t, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct conn *k = calloc(1, sizeof *k);
        atomic_store(&k->left, 4);
        k->d[0] = (struct direction){ .from = c, .to = t, .down = 0, .conn = k };
        k->d[1] = (struct direction){ .from = t, .to = c, .down = 1, .conn = k };
        for (int i = 0; i < 2; i++) {
            pthread_mutex_init(&k->d[i].lock, NULL);
            pthread_cond_init(&k->d[i].ready, NULL);
            start(&k->d[i]);
        }
    }
}
