// Bounding experiment for bench/RESULTS.md (ninth round), not part of gatewarden: a bare
// single-threaded TCP relay, either copying through user space (level-triggered epoll,
// recv/send through a 256 KiB buffer) or forwarding in the kernel (a sockhash with an
// sk_skb verdict program, written as raw eBPF instructions, that redirects every skb to the
// peer socket's egress). No HTTP, no auth, no frame tracking; closes both sockets at the
// first EOF. Needs root (CAP_BPF + CAP_NET_ADMIN): it loads the program in both modes.
//
//   gcc -O2 -o /tmp/smproxy bench/experiments/relay.c
//   setsid /tmp/smproxy LISTEN_PORT UPSTREAM_PORT 0   # user-space copy
//   setsid /tmp/smproxy LISTEN_PORT UPSTREAM_PORT 1   # in-kernel (sockmap)
//   bench/target/release/bench-load bulk 127.0.0.1:LISTEN_PORT --token x --conns 4 --secs 2
#define _GNU_SOURCE
#include <linux/bpf.h>
#include <sys/syscall.h>
#include <sys/socket.h>
#include <sys/epoll.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <errno.h>
#include <fcntl.h>

static long bpf(int cmd, union bpf_attr *a) { return syscall(__NR_bpf, cmd, a, sizeof(*a)); }
static int map_fd, use_sm;
struct key { unsigned rip, rport, lip, lport; };

static void keyof(int fd, struct key *k) {
  struct sockaddr_in l, r; socklen_t n = sizeof l;
  getsockname(fd, (void*)&l, &n); n = sizeof r; getpeername(fd, (void*)&r, &n);
  k->rip = r.sin_addr.s_addr; k->rport = (unsigned)r.sin_port << 16; // __sk_buff remote_port: network order in low 16 bits
  k->lip = l.sin_addr.s_addr; k->lport = ntohs(l.sin_port); // local_port: host order
}
static int put(struct key *k, int fd) {
  union bpf_attr a; memset(&a, 0, sizeof a); unsigned v = fd;
  a.map_fd = map_fd; a.key = (unsigned long)k; a.value = (unsigned long)&v; a.flags = BPF_ANY;
  return bpf(BPF_MAP_UPDATE_ELEM, &a);
}
#define I(code, dst, src, off, imm) ((struct bpf_insn){code, dst, src, off, imm})
int main(int argc, char **argv) {
  int lport = atoi(argv[1]), uport = atoi(argv[2]); use_sm = argc > 3 ? atoi(argv[3]) : 1;
  union bpf_attr a; memset(&a, 0, sizeof a);
  a.map_type = BPF_MAP_TYPE_SOCKHASH; a.key_size = 16; a.value_size = 4; a.max_entries = 65536;
  map_fd = bpf(BPF_MAP_CREATE, &a); if (map_fd < 0) { perror("map"); return 1; }
  struct bpf_insn p[] = {
    I(BPF_ALU64|BPF_MOV|BPF_X, 6, 1, 0, 0),
    I(BPF_LDX|BPF_MEM|BPF_W, 2, 6, offsetof(struct __sk_buff, remote_ip4), 0),
    I(BPF_STX|BPF_MEM|BPF_W, 10, 2, -16, 0),
    I(BPF_LDX|BPF_MEM|BPF_W, 2, 6, offsetof(struct __sk_buff, remote_port), 0),
    I(BPF_STX|BPF_MEM|BPF_W, 10, 2, -12, 0),
    I(BPF_LDX|BPF_MEM|BPF_W, 2, 6, offsetof(struct __sk_buff, local_ip4), 0),
    I(BPF_STX|BPF_MEM|BPF_W, 10, 2, -8, 0),
    I(BPF_LDX|BPF_MEM|BPF_W, 2, 6, offsetof(struct __sk_buff, local_port), 0),
    I(BPF_STX|BPF_MEM|BPF_W, 10, 2, -4, 0),
    I(BPF_ALU64|BPF_MOV|BPF_X, 1, 6, 0, 0),
    I(BPF_LD|BPF_DW|BPF_IMM, 2, BPF_PSEUDO_MAP_FD, 0, map_fd), I(0, 0, 0, 0, 0),
    I(BPF_ALU64|BPF_MOV|BPF_X, 3, 10, 0, 0),
    I(BPF_ALU64|BPF_ADD|BPF_K, 3, 0, 0, -16),
    I(BPF_ALU64|BPF_MOV|BPF_K, 4, 0, 0, 0),
    I(BPF_JMP|BPF_CALL, 0, 0, 0, BPF_FUNC_sk_redirect_hash),
    I(BPF_ALU64|BPF_MOV|BPF_K, 0, 0, 0, SK_PASS),  // not found: pass to our own queue
    I(BPF_JMP|BPF_EXIT, 0, 0, 0, 0),
  };
  static char log[65536];
  memset(&a, 0, sizeof a);
  a.prog_type = BPF_PROG_TYPE_SK_SKB; a.insns = (unsigned long)p; a.insn_cnt = sizeof p / sizeof p[0];
  a.license = (unsigned long)"GPL"; a.log_buf = (unsigned long)log; a.log_size = sizeof log; a.log_level = 1;
  int prog = bpf(BPF_PROG_LOAD, &a);
  if (prog < 0) { perror("prog"); fprintf(stderr, "%s\n", log); return 1; }
  memset(&a, 0, sizeof a);
  a.target_fd = map_fd; a.attach_bpf_fd = prog; a.attach_type = BPF_SK_SKB_VERDICT;
  if (bpf(BPF_PROG_ATTACH, &a) < 0) { perror("attach"); return 1; }

  int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(lport), .sin_addr.s_addr = htonl(0x7f000001)};
  if (bind(ls, (void*)&sa, sizeof sa) || listen(ls, 4096)) { perror("listen"); return 1; }
  int ep = epoll_create1(0);
  struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (unsigned long)-1};
  epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
  static int peer[65536]; static char buf[262144];
  struct epoll_event evs[256];
  for (;;) {
    int n = epoll_wait(ep, evs, 256, -1);
    for (int i = 0; i < n; i++) {
      if (evs[i].data.u64 == (unsigned long)-1) {
        int c = accept4(ls, 0, 0, 0); if (c < 0) continue;
        int u = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in ua = {.sin_family = AF_INET, .sin_port = htons(uport), .sin_addr.s_addr = htonl(0x7f000001)};
        if (connect(u, (void*)&ua, sizeof ua)) { close(c); close(u); continue; }
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        setsockopt(u, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (use_sm) {
          struct key kc, ku; keyof(c, &kc); keyof(u, &ku);
          if (put(&kc, u) || put(&ku, c)) perror("update");
        }
        fcntl(c, F_SETFL, O_NONBLOCK); fcntl(u, F_SETFL, O_NONBLOCK);
        if (use_sm) { ssize_t r = recv(c, buf, sizeof buf, 0); if (r > 0) send(u, buf, r, MSG_NOSIGNAL); }
        peer[c] = u; peer[u] = c;
        struct epoll_event e1 = {.events = use_sm ? EPOLLRDHUP : EPOLLIN, .data.u64 = c}, e2 = {.events = use_sm ? EPOLLRDHUP : EPOLLIN, .data.u64 = u};
        epoll_ctl(ep, EPOLL_CTL_ADD, c, &e1); epoll_ctl(ep, EPOLL_CTL_ADD, u, &e2);
      } else {
        int fd = evs[i].data.u64;
        ssize_t r = recv(fd, buf, sizeof buf, 0);
        if (r > 0) { ssize_t off = 0; while (off < r) { ssize_t w = send(peer[fd], buf + off, r - off, MSG_NOSIGNAL); if (w < 0) { if (errno == EAGAIN) continue; break; } off += w; } }
        else if (r == 0 || (r < 0 && errno != EAGAIN)) {
          int p2 = peer[fd]; epoll_ctl(ep, EPOLL_CTL_DEL, fd, 0); epoll_ctl(ep, EPOLL_CTL_DEL, p2, 0);
          close(fd); close(p2);
        }
      }
    }
  }
}
