// Bounding experiment for bench/RESULTS.md (twelfth round), not part of gatewarden: a bare
// single-threaded TCP relay driven by io_uring (multishot accept, multishot recv into a
// provided-buffer ring, one send in flight per direction, everything submitted and reaped
// by one io_uring_enter per batch), against relay.c's epoll + recv/send copy loop. It asks
// how much of a relayed round trip is system-call entry and exit that batching removes.
// No HTTP, no auth, no frame tracking; closes both sockets at the first EOF.
//
//   apt-get install liburing-dev
//   gcc -O2 -o /tmp/urelay bench/experiments/uring_relay.c -luring
//   setsid /tmp/urelay LISTEN_PORT UPSTREAM_PORT
#define _GNU_SOURCE
#include <liburing.h>
#include <sys/socket.h>
#include <sys/mman.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <errno.h>

#define NBUF 4096
#define BUFSZ 16384
#define MAXFD 65536
enum { OP_ACCEPT = 1, OP_RECV = 2, OP_SEND = 3 };
#define UD(op, fd, bid) (((unsigned long long)(op) << 56) | ((unsigned long long)(bid) << 32) | (unsigned)(fd))

static struct io_uring ring;
static struct io_uring_buf_ring *br;
static char *bufs;
static int peer[MAXFD];
// Per destination socket: a FIFO of (bid, len) waiting to be sent, and the offset of the head.
struct q { int bid[64]; int len[64]; int head, tail, off, busy; };
static struct q *sendq;

static struct io_uring_sqe *sqe_get(void) {
  struct io_uring_sqe *s = io_uring_get_sqe(&ring);
  if (!s) { io_uring_submit(&ring); s = io_uring_get_sqe(&ring); }
  return s;
}
static void give_back(int bid) {
  io_uring_buf_ring_add(br, bufs + (size_t)bid * BUFSZ, BUFSZ, bid, io_uring_buf_ring_mask(NBUF), 0);
  io_uring_buf_ring_advance(br, 1);
}
static void arm_recv(int fd) {
  struct io_uring_sqe *s = sqe_get();
  io_uring_prep_recv_multishot(s, fd, NULL, 0, 0);
  s->flags |= IOSQE_BUFFER_SELECT; s->buf_group = 0;
  io_uring_sqe_set_data64(s, UD(OP_RECV, fd, 0));
}
static void kick_send(int fd) {
  struct q *q = &sendq[fd];
  if (q->busy || q->head == q->tail) return;
  int i = q->head % 64;
  struct io_uring_sqe *s = sqe_get();
  io_uring_prep_send(s, fd, bufs + (size_t)q->bid[i] * BUFSZ + q->off, q->len[i] - q->off, MSG_NOSIGNAL);
  io_uring_sqe_set_data64(s, UD(OP_SEND, fd, q->bid[i]));
  q->busy = 1;
}
static void drop(int fd) {
  int p = peer[fd];
  if (p < 0) return;
  peer[fd] = peer[p] = -1;
  shutdown(fd, SHUT_RDWR); shutdown(p, SHUT_RDWR);  // cancels the multishot recvs
  close(fd); close(p);
  for (int f = fd, k = 0; k < 2; k++, f = p) {
    struct q *q = &sendq[f];
    if (q->busy && q->head != q->tail) q->head++;  // the one in flight goes back at its completion
    while (q->head != q->tail) give_back(q->bid[q->head++ % 64]);
    q->head = q->tail = q->off = 0;  // busy stays until its completion arrives
  }
}

int main(int argc, char **argv) {
  int lport = atoi(argv[1]), uport = atoi(argv[2]), one = 1;
  struct io_uring_params p; memset(&p, 0, sizeof p);
  p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_COOP_TASKRUN;
  int r = io_uring_queue_init_params(4096, &ring, &p);
  if (r < 0) { fprintf(stderr, "io_uring: %s\n", strerror(-r)); return 1; }
  br = mmap(NULL, NBUF * sizeof(struct io_uring_buf), PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
  struct io_uring_buf_reg reg = {.ring_addr = (unsigned long)br, .ring_entries = NBUF, .bgid = 0};
  if ((r = io_uring_register_buf_ring(&ring, &reg, 0))) { fprintf(stderr, "buf ring: %s\n", strerror(-r)); return 1; }
  io_uring_buf_ring_init(br);
  bufs = malloc((size_t)NBUF * BUFSZ);
  for (int i = 0; i < NBUF; i++) io_uring_buf_ring_add(br, bufs + (size_t)i * BUFSZ, BUFSZ, i, io_uring_buf_ring_mask(NBUF), i);
  io_uring_buf_ring_advance(br, NBUF);
  sendq = calloc(MAXFD, sizeof *sendq);
  for (int i = 0; i < MAXFD; i++) peer[i] = -1;

  int ls = socket(AF_INET, SOCK_STREAM, 0);
  setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(lport), .sin_addr.s_addr = htonl(0x7f000001)};
  if (bind(ls, (void*)&sa, sizeof sa) || listen(ls, 4096)) { perror("listen"); return 1; }
  struct io_uring_sqe *s = sqe_get();
  io_uring_prep_multishot_accept(s, ls, NULL, NULL, 0);
  io_uring_sqe_set_data64(s, UD(OP_ACCEPT, ls, 0));

  for (;;) {
    io_uring_submit_and_wait(&ring, 1);
    struct io_uring_cqe *cqe; unsigned head, n = 0;
    io_uring_for_each_cqe(&ring, head, cqe) {
      n++;
      unsigned long long ud = cqe->user_data; int op = ud >> 56, fd = (unsigned)ud, bid = (ud >> 32) & 0xffffff;
      int res = cqe->res;
      if (op == OP_ACCEPT) {
        if (!(cqe->flags & IORING_CQE_F_MORE)) {
          s = sqe_get(); io_uring_prep_multishot_accept(s, ls, NULL, NULL, 0);
          io_uring_sqe_set_data64(s, UD(OP_ACCEPT, ls, 0));
        }
        if (res < 0) continue;
        int c = res, u = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in ua = {.sin_family = AF_INET, .sin_port = htons(uport), .sin_addr.s_addr = htonl(0x7f000001)};
        if (connect(u, (void*)&ua, sizeof ua)) { close(c); close(u); continue; }
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        setsockopt(u, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        peer[c] = u; peer[u] = c;
        arm_recv(c); arm_recv(u);
      } else if (op == OP_RECV) {
        if (res > 0) {
          int b = cqe->flags >> IORING_CQE_BUFFER_SHIFT, to = peer[fd];
          if (to < 0) { give_back(b); continue; }
          struct q *q = &sendq[to]; int i = q->tail++ % 64;
          q->bid[i] = b; q->len[i] = res;
          kick_send(to);
          if (!(cqe->flags & IORING_CQE_F_MORE)) arm_recv(fd);
        } else if (res == -ENOBUFS) {
          arm_recv(fd);
        } else if (!(cqe->flags & IORING_CQE_F_MORE)) {
          drop(fd);
        }
      } else if (op == OP_SEND) {
        struct q *q = &sendq[fd]; q->busy = 0;
        if (peer[fd] < 0) { give_back(bid); continue; }
        if (res < 0) { give_back(bid); drop(fd); continue; }
        int i = q->head % 64;
        q->off += res;
        if (q->off >= q->len[i]) { give_back(bid); q->head++; q->off = 0; }
        kick_send(fd);
      }
    }
    io_uring_cq_advance(&ring, n);
  }
}
