/*
 * loadgen.c: a small epoll load generator for line servers ("OK ... <line>\n"
 * or any one-line reply per line). Native, single-threaded, so that it is not
 * the bottleneck when it drives a Deno, Node or Python server: the C epoll
 * server (epoll_server.c) shows how much faster it can go.
 *
 *   loadgen pingpong HOST PORT CLIENTS SECONDS LINE_BYTES
 *     each client sends a line, waits for the reply, repeats;
 *     prints "replies_per_s=N median_rtt_us=N"
 *   loadgen pipeline HOST PORT SECONDS LINE_BYTES
 *     one client streams lines for SECONDS, half-closes, reads every reply;
 *     prints "mb_per_s=N replies=N"
 *   loadgen idle HOST PORT CLIENTS [LINE_BYTES]
 *     opens CLIENTS connections, one line and reply each (a 5-byte line, or
 *     one of LINE_BYTES: a burst), prints "ready", holds them until stdin
 *     closes, then checks each still answers; prints "answered=N"
 *
 * Loopback only: the bench passes 127.0.0.1. Every loop is bounded by time.
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
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int dial(const char *host, int port, int nonblock) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  inet_pton(AF_INET, host, &a.sin_addr);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
    perror("connect");
    exit(1);
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (nonblock) fcntl(fd, F_SETFL, O_NONBLOCK);
  return fd;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static char *make_line(int bytes) {
  char *line = malloc(bytes);
  for (int i = 0; i < bytes - 1; i++) line[i] = 'a' + i % 26;
  line[bytes - 1] = '\n';
  return line;
}

#define MAX_SAMPLES 1000000

static int pingpong(const char *host, int port, int clients, double seconds, int bytes) {
  char *line = make_line(bytes);
  int ep = epoll_create1(0);
  int *fds = calloc(clients, sizeof(int));
  double *sent_at = calloc(clients, sizeof(double));
  double *samples = malloc(sizeof(double) * MAX_SAMPLES);
  long replies = 0, nsamples = 0;
  char buf[65536];
  for (int i = 0; i < clients; i++) {
    fds[i] = dial(host, port, 1);
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = i};
    epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev);
  }
  double start = now(), end = start + seconds;
  for (int i = 0; i < clients; i++) {
    sent_at[i] = now();
    if (write(fds[i], line, bytes) != bytes) { perror("write"); return 1; }
  }
  struct epoll_event events[1024];
  while (now() < end) {
    int n = epoll_wait(ep, events, 1024, 100);
    for (int e = 0; e < n; e++) {
      int i = events[e].data.u32;
      ssize_t got = read(fds[i], buf, sizeof buf);
      if (got < 0 && errno == EAGAIN) continue;
      if (got <= 0) { fprintf(stderr, "server closed client %d\n", i); return 1; }
      /* One reply per request; a reply ends at '\n' (replies may be split). */
      if (memchr(buf, '\n', got) == NULL) continue;
      double t = now();
      if (nsamples < MAX_SAMPLES) samples[nsamples++] = t - sent_at[i];
      replies++;
      sent_at[i] = t;
      if (write(fds[i], line, bytes) != bytes) { perror("write"); return 1; }
    }
  }
  double elapsed = now() - start;
  qsort(samples, nsamples, sizeof(double), cmp);
  printf("replies_per_s=%.0f median_rtt_us=%.1f\n", replies / elapsed,
         nsamples ? samples[nsamples / 2] * 1e6 : 0.0);
  return 0;
}

static int pipeline(const char *host, int port, double seconds, int bytes) {
  int fd = dial(host, port, 1);
  int lines_per_chunk = 65536 / bytes;
  int chunk_len = lines_per_chunk * bytes;
  char *chunk = malloc(chunk_len);
  char *line = make_line(bytes);
  for (int i = 0; i < lines_per_chunk; i++) memcpy(chunk + i * bytes, line, bytes);
  int ep = epoll_create1(0);
  struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.u32 = 0};
  epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
  long received = 0, newlines = 0, sent_lines = 0;
  int off = 0, writing = 1;
  char buf[262144];
  double start = now(), stop_writing = start + seconds, deadline = start + seconds + 60;
  while (now() < deadline) {
    struct epoll_event events[1];
    int n = epoll_wait(ep, events, 1, 100);
    if (writing && now() >= stop_writing && off == 0) {
      shutdown(fd, SHUT_WR);
      writing = 0;
      ev.events = EPOLLIN;
      epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
    }
    if (n <= 0) continue;
    if (writing && (events[0].events & EPOLLOUT)) {
      ssize_t w = write(fd, chunk + off, chunk_len - off);
      if (w > 0) {
        off += w;
        if (off == chunk_len) { off = 0; sent_lines += lines_per_chunk; }
      }
    }
    if (events[0].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
      ssize_t got = read(fd, buf, sizeof buf);
      if (got == 0) break;
      if (got < 0) {
        if (errno == EAGAIN) continue;
        perror("read");
        return 1;
      }
      received += got;
      for (char *p = buf; (p = memchr(p, '\n', buf + got - p)) != NULL; p++) newlines++;
    }
  }
  double elapsed = now() - start;
  if (newlines != sent_lines) {
    fprintf(stderr, "sent %ld lines, got %ld replies\n", sent_lines, newlines);
    return 1;
  }
  printf("mb_per_s=%.1f replies=%ld\n", received / elapsed / 1e6, newlines);
  return 0;
}

static int idle(const char *host, int port, int clients, int bytes) {
  char line[] = "idle\n", buf[4096];
  char *first = bytes > 0 ? make_line(bytes) : line;
  int first_len = bytes > 0 ? bytes : 5;
  int *fds = calloc(clients, sizeof(int));
  for (int i = 0; i < clients; i++) {
    fds[i] = dial(host, port, 0);
    if (write(fds[i], first, first_len) != first_len) {
      fprintf(stderr, "client %d could not send\n", i);
      return 1;
    }
    /* The whole reply: up to its '\n' (a long one comes in pieces). */
    for (;;) {
      ssize_t got = read(fds[i], buf, sizeof buf);
      if (got <= 0) { fprintf(stderr, "client %d got no reply\n", i); return 1; }
      if (buf[got - 1] == '\n') break;
    }
  }
  printf("ready\n");
  fflush(stdout);
  while (read(0, buf, sizeof buf) > 0) {}
  int answered = 0;
  for (int i = 0; i < clients; i++) {
    if (write(fds[i], line, 5) == 5 && read(fds[i], buf, sizeof buf) > 0) answered++;
    close(fds[i]);
  }
  printf("answered=%d\n", answered);
  return answered == clients ? 0 : 1;
}

int main(int argc, char **argv) {
  if (argc >= 7 && strcmp(argv[1], "pingpong") == 0)
    return pingpong(argv[2], atoi(argv[3]), atoi(argv[4]), atof(argv[5]), atoi(argv[6]));
  if (argc >= 6 && strcmp(argv[1], "pipeline") == 0)
    return pipeline(argv[2], atoi(argv[3]), atof(argv[4]), atoi(argv[5]));
  if (argc >= 5 && strcmp(argv[1], "idle") == 0)
    return idle(argv[2], atoi(argv[3]), atoi(argv[4]), argc >= 6 ? atoi(argv[5]) : 0);
  fprintf(stderr, "usage: see the top of loadgen.c\n");
  return 2;
}
