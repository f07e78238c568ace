/*
 * epoll_server.c: a C epoll line server, the ceiling of this machine: answers
 * every line with "OK ... <line>". It shows that loadgen can drive a server
 * faster than ours. With THREADS > 1, each thread has its own SO_REUSEPORT
 * listener and epoll loop (as socket_server_threads.ts does with workers): it
 * shows how much a second thread can gain on this machine at all.
 * Usage: epoll_server PORT [THREADS] (prints "listening on 127.0.0.1:PORT")
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <errno.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF 65536
typedef struct { int fd; int len; char in[BUF]; } Conn;

static void write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno != EAGAIN) return; /* the client is gone */
    if (w < 0) {
      struct pollfd pfd = {.fd = fd, .events = POLLOUT};
      if (poll(&pfd, 1, 1000) <= 0) return;
      continue;
    }
    p += w;
    n -= w;
  }
}

static int listen_on(int port) {
  int srv = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  setsockopt(srv, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  setsockopt(srv, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  if (bind(srv, (struct sockaddr *)&a, sizeof a) || listen(srv, 4096)) { perror("listen"); exit(1); }
  return srv;
}

static void *serve(void *arg) {
  int srv = (int)(long)arg, one = 1;
  int ep = epoll_create1(0);
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
  epoll_ctl(ep, EPOLL_CTL_ADD, srv, &ev);
  char *out = malloc(BUF * 8);
  struct epoll_event events[256];
  for (;;) {
    int n = epoll_wait(ep, events, 256, -1);
    for (int e = 0; e < n; e++) {
      Conn *c = events[e].data.ptr;
      if (c == NULL) {
        int fd = accept4(srv, NULL, NULL, SOCK_NONBLOCK);
        if (fd < 0) continue;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        c = calloc(1, sizeof(Conn));
        c->fd = fd;
        struct epoll_event cev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev);
        continue;
      }
      ssize_t got = read(c->fd, c->in + c->len, BUF - c->len);
      if (got < 0 && errno == EAGAIN) continue;
      if (got <= 0) {
        close(c->fd);
        free(c);
        continue;
      }
      c->len += got;
      int start = 0, o = 0;
      for (char *nl; (nl = memchr(c->in + start, '\n', c->len - start)) != NULL;) {
        int l = nl - (c->in + start) + 1;
        memcpy(out + o, "OK ... ", 7);
        memcpy(out + o + 7, c->in + start, l);
        o += 7 + l;
        start += l;
      }
      write_all(c->fd, out, o);
      memmove(c->in, c->in + start, c->len - start);
      c->len -= start;
      if (c->len == BUF) c->len = 0; /* a line longer than the buffer: drop it */
    }
  }
  return NULL;
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN); /* a client that resets must not kill the server */
  int threads = argc > 2 ? atoi(argv[2]) : 1;
  int srv = listen_on(argc > 1 ? atoi(argv[1]) : 0);
  struct sockaddr_in a;
  socklen_t len = sizeof a;
  getsockname(srv, (struct sockaddr *)&a, &len);
  int port = ntohs(a.sin_port);
  for (int i = 1; i < threads; i++) {
    pthread_t t;
    pthread_create(&t, NULL, serve, (void *)(long)listen_on(port));
  }
  printf("listening on 127.0.0.1:%d\n", port);
  fflush(stdout);
  serve((void *)(long)srv);
}
