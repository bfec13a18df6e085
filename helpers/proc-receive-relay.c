/*
 * proc-receive relay in C: what hooks/perl/proc-receive does, without an interpreter to start.
 *
 * receive-pack runs its proc-receive hook once per push, and the push waits for it: Perl takes
 * about 4.5 ms from spawn to its connection (6.5 ms with `use strict; use warnings`), this about
 * 1 ms. `npm run build` compiles it (scripts/build-c.sh) to dist/hooks/c/proc-receive when a
 * C compiler is there; without one the node uses the Perl relay, then the bash one.
 *
 * It connects twice to the node's loopback hook socket (GIT_REPLICATION_HOOK_PORT). The first
 * connection sends "<id> progress" (the id is GIT_REPLICATION_PUSH_ID) and carries the node's
 * progress lines to stderr, which git shows as "remote:"; it comes first, so that the node holds
 * it before the exchange starts and no early progress line is dropped. The second sends the id
 * and then carries the proc-receive exchange both ways (stdin to the node, the node's answer to
 * stdout). It ends when every flow has ended: a source at its end, or a destination that refused
 * a write. A flow that ends passes its end on: receive-pack's stdin ended shuts the node's
 * connection for writing (the node then ends it: receive-pack closes the hook's stdin only once
 * it has the report), and the node's side ended (a dropped push) closes stdout, so receive-pack
 * fails the push at once.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int dial(int port) {
  int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0) return -1;
  struct sockaddr_in addr;
  memset(&addr, 0, sizeof addr);
  addr.sin_family = AF_INET;
  addr.sin_port = htons((unsigned short)port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  /* No signal handler is installed, so connect is never interrupted. */
  if (connect(s, (struct sockaddr *)&addr, sizeof addr) != 0) {
    close(s);
    return -1;
  }
  /* The id line and the first pkt-lines go out at once, not held back by Nagle's algorithm
     until the node's delayed ACK. */
  int one = 1;
  setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return s;
}

static int put(int fd, const char *data, size_t len) {
  while (len > 0) {
    ssize_t n = write(fd, data, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      return 0;
    }
    data += n;
    len -= (size_t)n;
  }
  return 1;
}

/* put_line writes the id and its suffix in one write: one small packet, not two. */
static int put_line(int fd, const char *id, const char *suffix) {
  size_t a = strlen(id), b = strlen(suffix);
  char *line = malloc(a + b);
  if (!line) return 0;
  memcpy(line, id, a);
  memcpy(line + a, suffix, b);
  int ok = put(fd, line, a + b);
  free(line);
  return ok;
}

struct flow {
  int from;
  int to;
};

int main(int argc, char **argv) {
  /* `--check`: the node asks once, when it starts, whether this build runs here. */
  if (argc == 2 && strcmp(argv[1], "--check") == 0) return 0;
  const char *port_text = getenv("GIT_REPLICATION_HOOK_PORT");
  const char *id = getenv("GIT_REPLICATION_PUSH_ID");
  char *end = NULL;
  long port = port_text ? strtol(port_text, &end, 10) : 0;
  if (!port_text || *port_text == '\0') {
    fputs("GIT_REPLICATION_HOOK_PORT is not set\n", stderr);
    return 1;
  }
  /* Digits only, as the Perl relay takes it: strtol alone would let " 80" and "+80" through. */
  if (port_text[0] < '0' || port_text[0] > '9' || strlen(port_text) > 5 || *end != '\0' || port < 1 || port > 65535) {
    fprintf(stderr, "GIT_REPLICATION_HOOK_PORT is not a port number (1-65535): %.40s\n", port_text);
    return 1;
  }
  if (!id || *id == '\0') {
    fputs("GIT_REPLICATION_PUSH_ID is not set\n", stderr);
    return 1;
  }
  /* A peer gone away is a write that fails (EPIPE), which ends that flow, not a signal. */
  signal(SIGPIPE, SIG_IGN);

  int progress = dial((int)port);
  if (progress >= 0 && !put_line(progress, id, " progress\n")) {
    close(progress);
    progress = -1;
  }
  int main_socket = dial((int)port);
  if (main_socket < 0 || !put_line(main_socket, id, "\n")) return 1;

  struct flow flows[3] = {{0, main_socket}, {main_socket, 1}, {progress, 2}};
  int count = progress >= 0 ? 3 : 2;
  static char buf[65536];
  while (count > 0) {
    struct pollfd fds[3];
    for (int i = 0; i < count; i++) {
      fds[i].fd = flows[i].from;
      fds[i].events = POLLIN;
      fds[i].revents = 0;
    }
    if (poll(fds, (nfds_t)count, -1) < 0) {
      if (errno == EINTR) continue;
      return 1;
    }
    int done[3] = {0, 0, 0};
    for (int i = 0; i < count; i++) {
      if (fds[i].revents == 0) continue;
      ssize_t n = read(flows[i].from, buf, sizeof buf);
      if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      if (n > 0 && put(flows[i].to, buf, (size_t)n)) continue;
      done[i] = 1;
      if (flows[i].to == main_socket) shutdown(main_socket, SHUT_WR);
      else if (flows[i].to == 1) close(1);
    }
    int kept = 0;
    for (int i = 0; i < count; i++)
      if (!done[i]) flows[kept++] = flows[i];
    count = kept;
  }
  return 0;
}
