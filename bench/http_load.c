/*
 * http_load.c: a small epoll load generator for HTTP/1.1 keep-alive, the one
 * bench/http_bench.ts drives both HTTP servers with. Native and
 * single-threaded, like loadgen.c, so that it is not what limits a Deno or
 * Node server.
 *
 *   http_load HOST PORT CLIENTS SECONDS PATH
 *     opens CLIENTS connections; each sends "GET PATH HTTP/1.1", reads the
 *     whole response (its head, then Content-Length bytes), checks that it
 *     is a 200, and sends the next request on the same connection, for
 *     SECONDS; prints "requests_per_s=N median_us=N"
 *
 * A connection the server closes, a status other than 200 or a response
 * without Content-Length is an error: exit 1. Loopback only: the bench
 * passes 127.0.0.1. Every loop is bounded by time.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUF 65536
#define MAX_SAMPLES 1000000

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

struct client {
  int fd;
  char *buf;
  int have;
  double sent_at;
};

/* The length of the whole response at the start of buf, 0 if more bytes are needed, -1 if bad. */
static long response_length(char *buf, int have) {
  char *end = memmem(buf, have, "\r\n\r\n", 4);
  if (end == NULL) return have >= BUF ? -1 : 0;
  long head = end + 4 - buf;
  if (have < 13 || memcmp(buf, "HTTP/1.1 200 ", 13) != 0) return -1;
  for (char *p = buf; p < end; p++) {
    if (*p == '\n' && strncasecmp(p + 1, "content-length:", 15) == 0) {
      return head + strtol(p + 16, NULL, 10);
    }
  }
  return -1;
}

int main(int argc, char **argv) {
  if (argc < 6) {
    fprintf(stderr, "usage: http_load HOST PORT CLIENTS SECONDS PATH\n");
    return 2;
  }
  const char *host = argv[1];
  int port = atoi(argv[2]), clients = atoi(argv[3]);
  double seconds = atof(argv[4]);
  char request[1024];
  int request_len = snprintf(request, sizeof request,
                             "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUser-Agent: http_load\r\n"
                             "Accept: */*\r\n\r\n",
                             argv[5], host, port);
  struct client *c = calloc(clients, sizeof *c);
  double *samples = malloc(sizeof(double) * MAX_SAMPLES);
  long requests = 0, nsamples = 0;
  int ep = epoll_create1(0);
  for (int i = 0; i < clients; i++) {
    c[i].fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, host, &a.sin_addr);
    if (connect(c[i].fd, (struct sockaddr *)&a, sizeof a) != 0) {
      perror("connect");
      return 1;
    }
    int one = 1;
    setsockopt(c[i].fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(c[i].fd, F_SETFL, O_NONBLOCK);
    c[i].buf = malloc(BUF);
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = i};
    epoll_ctl(ep, EPOLL_CTL_ADD, c[i].fd, &ev);
  }
  double start = now(), end = start + seconds;
  for (int i = 0; i < clients; i++) {
    c[i].sent_at = now();
    if (write(c[i].fd, request, request_len) != request_len) {
      perror("write");
      return 1;
    }
  }
  struct epoll_event events[1024];
  while (now() < end) {
    int n = epoll_wait(ep, events, 1024, 100);
    for (int e = 0; e < n; e++) {
      struct client *x = &c[events[e].data.u32];
      ssize_t got = read(x->fd, x->buf + x->have, BUF - x->have);
      if (got < 0 && errno == EAGAIN) continue;
      if (got <= 0) {
        fprintf(stderr, "the server closed a keep-alive connection\n");
        return 1;
      }
      x->have += got;
      long length = response_length(x->buf, x->have);
      if (length < 0) {
        fprintf(stderr, "not a 200 response with a Content-Length: %.*s\n", x->have > 80 ? 80 : x->have,
                x->buf);
        return 1;
      }
      if (length == 0 || x->have < length) continue;
      if (x->have > length) {
        fprintf(stderr, "bytes after the response: the server sent more than Content-Length\n");
        return 1;
      }
      double t = now();
      if (nsamples < MAX_SAMPLES) samples[nsamples++] = t - x->sent_at;
      requests++;
      x->have = 0;
      x->sent_at = t;
      if (write(x->fd, request, request_len) != request_len) {
        perror("write");
        return 1;
      }
    }
  }
  double elapsed = now() - start;
  qsort(samples, nsamples, sizeof(double), cmp);
  printf("requests_per_s=%.0f median_us=%.1f\n", requests / elapsed,
         nsamples ? samples[nsamples / 2] * 1e6 : 0.0);
  return 0;
}
