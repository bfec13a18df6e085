/*
 * The spawn helper in C: what helpers/spawn-helper.py does (src/git/spawner.ts is its other
 * side), without an interpreter, a thread or a lock per process.
 *
 * A node starts git through a helper process so that the fork is not of the node. Python's
 * subprocess costs the helper about 0.5 ms of CPU per process; this starts it with posix_spawn
 * (glibc's clone with CLONE_VFORK) and reaps from a signalfd in the same poll loop that reads the
 * requests. `npm run build` compiles it (scripts/build-c.sh) to dist/helpers/c/spawn-helper
 * when a C compiler is there; without one the node uses the Python helper, then the Node.js one.
 *
 * Same protocol as the other helpers: requests `{id, file, args, cwd, env}` arrive as JSON lines
 * on the node's IPC channel (NODE_CHANNEL_FD); for each, three sockets are connected to the
 * node's Unix socket (a first line `<id> <fd>` says which stream each is) and handed to the
 * process as its stdin, stdout and stderr; the helper reports `{id, pid}`, then
 * `{id, code, signal}` when it exits, or `{id, error}`. It exits when the node does (its IPC
 * channel closes). A line it cannot read as a request is dropped (with its id, it is refused).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- growable byte buffer ---- */

typedef struct {
  char *p;
  size_t n, cap;
} buf;

static void need(buf *b, size_t more) {
  if (b->n + more + 1 <= b->cap) return;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < b->n + more + 1) cap *= 2;
  char *p = realloc(b->p, cap);
  if (!p) _exit(1);
  b->p = p;
  b->cap = cap;
}

static void add(buf *b, const char *s, size_t len) {
  need(b, len);
  memcpy(b->p + b->n, s, len);
  b->n += len;
  b->p[b->n] = '\0';
}

static void addc(buf *b, char c) { add(b, &c, 1); }

static void adds(buf *b, const char *s) { add(b, s, strlen(s)); }

/* ---- the IPC channel ---- */

static int channel = -1;

/* say writes one report line; a node that is gone ends the helper, as the others do. */
static void say(buf *line) {
  addc(line, '\n');
  const char *p = line->p;
  size_t left = line->n;
  while (left > 0) {
    ssize_t w = write(channel, p, left);
    if (w < 0) {
      if (errno == EINTR) continue;
      _exit(0);
    }
    p += w;
    left -= (size_t)w;
  }
}

/* addjson appends a JSON string: what the node reads back is these bytes (invalid UTF-8 is the node's to replace). */
static void addjson(buf *b, const char *s) {
  addc(b, '"');
  for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
    if (*c == '"' || *c == '\\') {
      addc(b, '\\');
      addc(b, (char)*c);
    } else if (*c < 0x20) {
      char esc[8];
      snprintf(esc, sizeof esc, "\\u%04x", *c);
      adds(b, esc);
    } else {
      addc(b, (char)*c);
    }
  }
  addc(b, '"');
}

static void report_pid(long long id, pid_t pid) {
  buf b = {0};
  char s[96];
  snprintf(s, sizeof s, "{\"id\":%lld,\"pid\":%d}", id, (int)pid);
  adds(&b, s);
  say(&b);
  free(b.p);
}

static void report_error(long long id, const char *file, const char *why) {
  buf b = {0}, m = {0};
  char s[64];
  snprintf(s, sizeof s, "{\"id\":%lld,\"error\":", id);
  adds(&b, s);
  adds(&m, "spawn ");
  adds(&m, file ? file : "(none)");
  adds(&m, ": ");
  adds(&m, why);
  addjson(&b, m.p);
  addc(&b, '}');
  say(&b);
  free(b.p);
  free(m.p);
}

static const struct {
  int sig;
  const char *name;
} SIGNALS[] = {
    {SIGHUP, "SIGHUP"},   {SIGINT, "SIGINT"},       {SIGQUIT, "SIGQUIT"},   {SIGILL, "SIGILL"},     {SIGTRAP, "SIGTRAP"},
    {SIGABRT, "SIGABRT"}, {SIGBUS, "SIGBUS"},       {SIGFPE, "SIGFPE"},     {SIGKILL, "SIGKILL"},   {SIGUSR1, "SIGUSR1"},
    {SIGSEGV, "SIGSEGV"}, {SIGUSR2, "SIGUSR2"},     {SIGPIPE, "SIGPIPE"},   {SIGALRM, "SIGALRM"},   {SIGTERM, "SIGTERM"},
    {SIGCHLD, "SIGCHLD"}, {SIGCONT, "SIGCONT"},     {SIGSTOP, "SIGSTOP"},   {SIGTSTP, "SIGTSTP"},   {SIGTTIN, "SIGTTIN"},
    {SIGTTOU, "SIGTTOU"}, {SIGURG, "SIGURG"},       {SIGXCPU, "SIGXCPU"},   {SIGXFSZ, "SIGXFSZ"},   {SIGVTALRM, "SIGVTALRM"},
    {SIGPROF, "SIGPROF"}, {SIGWINCH, "SIGWINCH"},   {SIGIO, "SIGIO"},       {SIGPWR, "SIGPWR"},     {SIGSYS, "SIGSYS"},
#ifdef SIGSTKFLT
    {SIGSTKFLT, "SIGSTKFLT"},
#endif
};

static void report_exit(long long id, int status) {
  char s[128];
  if (WIFSIGNALED(status)) {
    int sig = WTERMSIG(status);
    char unknown[16];
    const char *name = NULL;
    for (size_t i = 0; i < sizeof SIGNALS / sizeof SIGNALS[0]; i++)
      if (SIGNALS[i].sig == sig) name = SIGNALS[i].name;
    if (!name) {
      snprintf(unknown, sizeof unknown, "SIG%d", sig);
      name = unknown;
    }
    snprintf(s, sizeof s, "{\"id\":%lld,\"code\":null,\"signal\":\"%s\"}", id, name);
  } else {
    snprintf(s, sizeof s, "{\"id\":%lld,\"code\":%d,\"signal\":null}", id, WEXITSTATUS(status));
  }
  buf b = {0};
  adds(&b, s);
  say(&b);
  free(b.p);
}

/* ---- reading a request: the JSON the node's IPC channel writes ---- */

typedef struct {
  const char *p, *end;
} cursor;

static void ws(cursor *c) {
  while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r')) c->p++;
}

static int hex4(const char *p, unsigned *out) {
  unsigned v = 0;
  for (int i = 0; i < 4; i++) {
    char h = p[i];
    v <<= 4;
    if (h >= '0' && h <= '9') v |= (unsigned)(h - '0');
    else if (h >= 'a' && h <= 'f') v |= (unsigned)(h - 'a' + 10);
    else if (h >= 'A' && h <= 'F') v |= (unsigned)(h - 'A' + 10);
    else return 0;
  }
  *out = v;
  return 1;
}

static void utf8(buf *b, unsigned cp) {
  char o[4];
  if (cp < 0x80) {
    addc(b, (char)cp);
  } else if (cp < 0x800) {
    o[0] = (char)(0xc0 | (cp >> 6));
    o[1] = (char)(0x80 | (cp & 0x3f));
    add(b, o, 2);
  } else if (cp < 0x10000) {
    o[0] = (char)(0xe0 | (cp >> 12));
    o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
    o[2] = (char)(0x80 | (cp & 0x3f));
    add(b, o, 3);
  } else {
    o[0] = (char)(0xf0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    o[3] = (char)(0x80 | (cp & 0x3f));
    add(b, o, 4);
  }
}

/*
 * string reads a JSON string into a new NUL-terminated copy (*out, to free); 0 if it is no
 * string. A NUL inside it (no argument or variable can hold one) sets *nul. A lone surrogate
 * becomes U+FFFD, as the node itself writes such a string to a process.
 */
static int string(cursor *c, char **out, int *nul) {
  ws(c);
  if (c->p >= c->end || *c->p != '"') return 0;
  c->p++;
  buf b = {0};
  need(&b, 0);
  b.p[0] = '\0';
  while (c->p < c->end && *c->p != '"') {
    char ch = *c->p++;
    if (ch != '\\') {
      addc(&b, ch);
      continue;
    }
    if (c->p >= c->end) break;
    char e = *c->p++;
    switch (e) {
    case '"': addc(&b, '"'); break;
    case '\\': addc(&b, '\\'); break;
    case '/': addc(&b, '/'); break;
    case 'b': addc(&b, '\b'); break;
    case 'f': addc(&b, '\f'); break;
    case 'n': addc(&b, '\n'); break;
    case 'r': addc(&b, '\r'); break;
    case 't': addc(&b, '\t'); break;
    case 'u': {
      unsigned cp;
      if (c->end - c->p < 4 || !hex4(c->p, &cp)) goto bad;
      c->p += 4;
      if (cp >= 0xd800 && cp < 0xdc00) {
        unsigned lo;
        if (c->end - c->p >= 6 && c->p[0] == '\\' && c->p[1] == 'u' && hex4(c->p + 2, &lo) && lo >= 0xdc00 && lo < 0xe000) {
          c->p += 6;
          cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
        } else {
          cp = 0xfffd;
        }
      } else if (cp >= 0xdc00 && cp < 0xe000) {
        cp = 0xfffd;
      }
      if (cp == 0) *nul = 1;
      utf8(&b, cp);
      break;
    }
    default: goto bad;
    }
  }
  if (c->p >= c->end) goto bad;
  c->p++;
  *out = b.p;
  return 1;
bad:
  free(b.p);
  return 0;
}

/* opening reads a container's first character; 1 if an item follows, 0 if it is empty (its close read), -1 if it is no such container. */
static int opening(cursor *c, char open, char close) {
  ws(c);
  if (c->p >= c->end || *c->p != open) return -1;
  c->p++;
  ws(c);
  if (c->p < c->end && *c->p == close) {
    c->p++;
    return 0;
  }
  return 1;
}

/* following reads what comes after an item: 1 if another follows (','), 0 at the container's close, -1 otherwise. */
static int following(cursor *c, char close) {
  ws(c);
  if (c->p < c->end && *c->p == ',') {
    c->p++;
    return 1;
  }
  if (c->p < c->end && *c->p == close) {
    c->p++;
    return 0;
  }
  return -1;
}

/* member reads an object member's name and its ':' (*name, to free); 0 if there is none. */
static int member(cursor *c, char **name, int *nul) {
  if (!string(c, name, nul)) return 0;
  ws(c);
  if (c->p < c->end && *c->p == ':') {
    c->p++;
    ws(c);
    return 1;
  }
  free(*name);
  return 0;
}

/* skip passes over one JSON value of any kind. */
static int skip(cursor *c, int depth) {
  ws(c);
  if (c->p >= c->end || depth > 64) return 0;
  char ch = *c->p;
  int nul = 0;
  if (ch == '"') {
    char *s;
    if (!string(c, &s, &nul)) return 0;
    free(s);
    return 1;
  }
  if (ch == '{' || ch == '[') {
    char close = ch == '{' ? '}' : ']';
    for (int more = opening(c, ch, close); more != 0; more = following(c, close)) {
      if (more < 0) return 0;
      if (close == '}') {
        char *name;
        if (!member(c, &name, &nul)) return 0;
        free(name);
      }
      if (!skip(c, depth + 1)) return 0;
    }
    return 1;
  }
  const char *start = c->p;
  while (c->p < c->end && strchr(",}] \t\r\n", *c->p) == NULL) c->p++;
  return c->p > start;
}

typedef struct {
  long long id;
  int has_id;
  char *file;
  char *cwd;
  char **args; /* argv: file first */
  size_t nargs;
  char **env; /* NAME=value */
  size_t nenv;
  int nul;
  const char *refused; /* why a well-formed request is still refused */
} request;

static void free_request(request *r) {
  free(r->file);
  free(r->cwd);
  for (size_t i = 0; i < r->nargs; i++) free(r->args[i]);
  free(r->args);
  for (size_t i = 0; i < r->nenv; i++) free(r->env[i]);
  free(r->env);
}

static void push(char ***list, size_t *n, char *s) {
  char **l = realloc(*list, (*n + 2) * sizeof **list);
  if (!l) _exit(1);
  l[(*n)++] = s;
  l[*n] = NULL;
  *list = l;
}

/* truncate_list frees a NULL-ended list's entries from `keep` on and ends it there. */
static void truncate_list(char **list, size_t *n, size_t keep) {
  for (size_t i = keep; i < *n; i++) free(list[i]);
  *n = keep;
  list[keep] = NULL;
}

/* parse_id reads the request's id: the node's count up from 1, digits only, read within the line. */
static int parse_id(cursor *c, request *r) {
  long long v = 0;
  const char *d = c->p;
  while (d < c->end && *d >= '0' && *d <= '9' && d - c->p < 15) v = v * 10 + (*d++ - '0');
  if (d == c->p || (d < c->end && *d >= '0' && *d <= '9')) return 0;
  r->id = v;
  r->has_id = 1;
  c->p = d;
  return 1;
}

/* parse_args reads the arguments (after argv[0]); a repeated key counts once, as JSON.parse takes it: the last. */
static int parse_args(cursor *c, request *r) {
  truncate_list(r->args, &r->nargs, 1);
  for (int more = opening(c, '[', ']'); more != 0; more = following(c, ']')) {
    char *a;
    if (more < 0 || !string(c, &a, &r->nul)) return 0;
    push(&r->args, &r->nargs, a);
  }
  return 1;
}

/* parse_env reads the environment as NAME=value strings; the last of a repeated key counts, and
   of a repeated name, as JSON.parse and Python's json take them. */
static int parse_env(cursor *c, request *r) {
  truncate_list(r->env, &r->nenv, 0);
  for (int more = opening(c, '{', '}'); more != 0; more = following(c, '}')) {
    char *name, *value;
    if (more < 0 || !member(c, &name, &r->nul)) return 0;
    if (c->p >= c->end || *c->p != '"') {
      /* The node sends strings only; anything else is a request this helper cannot run as asked. */
      r->refused = "an environment variable's value is not a string";
      free(name);
      if (!skip(c, 1)) return 0;
      continue;
    }
    if (!string(c, &value, &r->nul)) {
      free(name);
      return 0;
    }
    /* A name that is empty or holds '=' cannot be set as asked: refused, as Python's helper does. */
    if (strchr(name, '=') != NULL || name[0] == '\0') r->refused = "an environment variable name is empty or holds '='";
    buf kv = {0};
    adds(&kv, name);
    addc(&kv, '=');
    adds(&kv, value);
    for (size_t i = 0; i < r->nenv; i++)
      if (strncmp(r->env[i], kv.p, strlen(name) + 1) == 0) {
        free(r->env[i]);
        r->env[i] = r->env[--r->nenv];
        r->env[r->nenv] = NULL;
        break;
      }
    push(&r->env, &r->nenv, kv.p);
    free(name);
    free(value);
  }
  return 1;
}

/* parse reads a request line; 0 if it is none (r->has_id says whether its id could be read). */
static int parse(const char *line, size_t len, request *r) {
  cursor c = {line, line + len};
  memset(r, 0, sizeof *r);
  push(&r->args, &r->nargs, NULL); /* argv[0], the file, set below */
  push(&r->env, &r->nenv, NULL);
  r->nenv = 0;
  for (int more = opening(&c, '{', '}'); more != 0; more = following(&c, '}')) {
    char *key;
    if (more < 0 || !member(&c, &key, &r->nul)) return 0;
    int ok;
    if (strcmp(key, "id") == 0) ok = parse_id(&c, r);
    else if (strcmp(key, "file") == 0) {
      free(r->file);
      r->file = NULL;
      ok = string(&c, &r->file, &r->nul);
    } else if (strcmp(key, "cwd") == 0) {
      free(r->cwd);
      r->cwd = NULL;
      ok = string(&c, &r->cwd, &r->nul);
    } else if (strcmp(key, "args") == 0) ok = parse_args(&c, r);
    else if (strcmp(key, "env") == 0) ok = parse_env(&c, r);
    else ok = skip(&c, 1);
    free(key);
    if (!ok) return 0;
  }
  ws(&c);
  if (c.p != c.end || !r->has_id || !r->file) return 0;
  r->args[0] = strdup(r->file);
  return r->args[0] != NULL;
}

/* ---- starting a process ---- */

/* The programs found on PATH, by name and PATH: a name looked up through PATH on every spawn
   costs an execve that fails for each directory before git's. Only absolute PATHs are kept. */
typedef struct found {
  char *file, *path, *where;
  struct found *next;
} found;
static found *known = NULL;

static const char *env_value(const request *r, const char *name) {
  size_t n = strlen(name);
  for (size_t i = 0; i < r->nenv; i++)
    if (strncmp(r->env[i], name, n) == 0 && r->env[i][n] == '=') return r->env[i] + n + 1;
  return NULL;
}

/* executable says whether `path` (relative to `cwd`) is a program that can run; a regular file
   that cannot sets *denied, so that a program found only as such is refused as Permission denied. */
static int executable(const char *cwd, const char *path, int *denied) {
  buf full = {0};
  if (path[0] != '/' && cwd) {
    adds(&full, cwd);
    addc(&full, '/');
  }
  adds(&full, path);
  struct stat st;
  int ok = 0;
  if (stat(full.p, &st) == 0 && S_ISREG(st.st_mode)) {
    ok = access(full.p, X_OK) == 0;
    if (!ok) *denied = 1;
  }
  free(full.p);
  return ok;
}

/* locate names the program to exec: `file` itself when it holds a '/', else the first of PATH's
   directories (the request's PATH, as the process will see it) that has it; NULL when none does. */
static char *locate(const request *r, int *denied) {
  if (strchr(r->file, '/')) return strdup(r->file);
  const char *path = env_value(r, "PATH");
  if (!path) path = "/bin:/usr/bin";
  int absolute = 1;
  for (const char *d = path;; d++) {
    if (*d != '/') absolute = 0;
    d = strchr(d, ':');
    if (!d) break;
  }
  if (absolute)
    for (found *f = known; f; f = f->next)
      if (strcmp(f->file, r->file) == 0 && strcmp(f->path, path) == 0) return strdup(f->where);
  char *hit = NULL;
  for (const char *d = path; !hit;) {
    const char *colon = strchr(d, ':');
    size_t len = colon ? (size_t)(colon - d) : strlen(d);
    buf cand = {0};
    if (len == 0) adds(&cand, ".");
    else add(&cand, d, len);
    addc(&cand, '/');
    adds(&cand, r->file);
    if (executable(r->cwd, cand.p, denied)) hit = cand.p;
    else free(cand.p);
    if (!colon) break;
    d = colon + 1;
  }
  if (hit && absolute) {
    found *f = malloc(sizeof *f);
    if (f) {
      f->file = strdup(r->file);
      f->path = strdup(path);
      f->where = strdup(hit);
      if (f->file && f->path && f->where) {
        f->next = known;
        known = f;
      } else {
        free(f->file);
        free(f->path);
        free(f->where);
        free(f);
      }
    }
  }
  return hit;
}

static const char *socket_path;

/* dial connects one of the process's streams to the node and says which it is; -1 with errno. */
static int dial(long long id, int fd) {
  int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0) return -1;
  struct sockaddr_un addr;
  memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  strncpy(addr.sun_path, socket_path, sizeof addr.sun_path - 1);
  int r;
  do r = connect(s, (struct sockaddr *)&addr, sizeof addr);
  while (r != 0 && errno == EINTR);
  if (r != 0) {
    int e = errno;
    close(s);
    errno = e;
    return -1;
  }
  char line[48];
  int n = snprintf(line, sizeof line, "%lld %d\n", id, fd);
  for (int off = 0; off < n;) {
    ssize_t w = write(s, line + off, (size_t)(n - off));
    if (w < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      close(s);
      errno = e;
      return -1;
    }
    off += (int)w;
  }
  return s;
}

/* The processes started and not yet reaped: pid to request id. */
typedef struct {
  pid_t pid;
  long long id;
} running;
static running *procs = NULL;
static size_t nprocs = 0, capprocs = 0;

static sigset_t defaults;

static void start(const request *r) {
  if (r->nul) {
    report_error(r->id, r->file, "an argument, variable or directory holds a NUL byte");
    return;
  }
  if (r->refused) {
    report_error(r->id, r->file, r->refused);
    return;
  }
  /* The program first: a spawn that cannot start connects no sockets. */
  int denied = 0;
  char *exe = locate(r, &denied);
  int socks[3] = {-1, -1, -1};
  for (int fd = 0; exe && fd < 3; fd++) {
    socks[fd] = dial(r->id, fd);
    if (socks[fd] < 0) {
      char why[160];
      snprintf(why, sizeof why, "cannot connect to the node's socket: %s", strerror(errno));
      report_error(r->id, r->file, why);
      for (int i = 0; i < fd; i++) close(socks[i]);
      free(exe);
      return;
    }
  }
  int err = 0;
  pid_t pid = -1;
  if (!exe) {
    err = denied ? EACCES : ENOENT;
  } else {
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&attr);
    for (int fd = 0; fd < 3; fd++) posix_spawn_file_actions_adddup2(&fa, socks[fd], fd);
    if (r->cwd) posix_spawn_file_actions_addchdir_np(&fa, r->cwd);
    sigset_t none;
    sigemptyset(&none);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &defaults);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    err = posix_spawn(&pid, exe, &fa, &attr, r->args, r->env);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
  }
  /* The process holds its own copies; the node sees a stream end once it closes them. */
  for (int fd = 0; fd < 3; fd++)
    if (socks[fd] >= 0) close(socks[fd]);
  if (err) {
    /* A program not on PATH, or one that does not start here, or a directory that is not there. */
    buf why = {0};
    adds(&why, strerror(err));
    struct stat st;
    if (r->cwd && stat(r->cwd, &st) != 0) {
      adds(&why, " (the directory ");
      adds(&why, r->cwd);
      addc(&why, ')');
    } else if (!exe) {
      adds(&why, denied ? " (not executable)" : " (not found on PATH)");
    } else if (r->cwd) {
      adds(&why, " (running ");
      adds(&why, exe);
      adds(&why, " in ");
      adds(&why, r->cwd);
      addc(&why, ')');
    }
    report_error(r->id, r->file, why.p);
    free(why.p);
    free(exe);
    return;
  }
  free(exe);
  if (nprocs == capprocs) {
    size_t cap = capprocs ? capprocs * 2 : 64;
    running *p = realloc(procs, cap * sizeof *p);
    if (!p) _exit(1);
    procs = p;
    capprocs = cap;
  }
  procs[nprocs].pid = pid;
  procs[nprocs].id = r->id;
  nprocs++;
  /* Its exit is read only after this, in the loop: the pid always goes out first. */
  report_pid(r->id, pid);
}

static void reap(void) {
  for (;;) {
    int status;
    pid_t pid = waitpid(-1, &status, WNOHANG);
    if (pid <= 0) return;
    for (size_t i = 0; i < nprocs; i++) {
      if (procs[i].pid != pid) continue;
      long long id = procs[i].id;
      procs[i] = procs[--nprocs];
      report_exit(id, status);
      break;
    }
  }
}

static void ignore(int sig) { (void)sig; }

/* cloexec_all marks every open descriptor from 3 up close-on-exec, by /proc/self/fd. */
static void cloexec_all(void) {
  DIR *d = opendir("/proc/self/fd");
  if (!d) {
    for (int fd = 3; fd < 1024; fd++) fcntl(fd, F_SETFD, FD_CLOEXEC);
    return;
  }
  int own = dirfd(d);
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    char *end;
    long fd = strtol(e->d_name, &end, 10);
    if (*end != '\0' || end == e->d_name || fd < 3 || fd == own) continue;
    int flags = fcntl((int)fd, F_GETFD);
    if (flags >= 0) fcntl((int)fd, F_SETFD, flags | FD_CLOEXEC);
  }
  closedir(d);
}

int main(int argc, char **argv) {
  /* `--check`: the build asks whether this binary runs here. */
  if (argc == 2 && strcmp(argv[1], "--check") == 0) return 0;
  const char *fd_text = getenv("NODE_CHANNEL_FD");
  if (argc != 2 || !fd_text) {
    fputs("spawn-helper: run by a node, with its socket path and an IPC channel\n", stderr);
    return 2;
  }
  socket_path = argv[1];
  if (strlen(socket_path) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
    fputs("spawn-helper: socket path too long\n", stderr);
    return 2;
  }
  channel = atoi(fd_text);
  /* Nothing this process was given reaches git but the three sockets: every descriptor it holds
     now (the channel, and any the node's parent left open) is closed at exec; those it opens
     later are opened close-on-exec. (Python's Popen closes them all with close_fds.) */
  cloexec_all();
  /* Reads follow poll; a report waits for room rather than failing on a full channel. */
  int fl = fcntl(channel, F_GETFL);
  if (fl >= 0) fcntl(channel, F_SETFL, fl & ~O_NONBLOCK);
  unsetenv("NODE_CHANNEL_FD");
  unsetenv("NODE_CHANNEL_SERIALIZATION_MODE");

  /* The node's shutdown signals are the node's: the helper ends with its IPC channel. A handler,
     not SIG_IGN, and the processes it starts get every changed disposition back (defaults). */
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = ignore;
  sa.sa_flags = SA_RESTART;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGHUP, &sa, NULL);
  /* A write to a node that is gone fails (EPIPE) and ends the helper in say(). */
  signal(SIGPIPE, SIG_IGN);
  sigemptyset(&defaults);
  sigaddset(&defaults, SIGINT);
  sigaddset(&defaults, SIGTERM);
  sigaddset(&defaults, SIGHUP);
  sigaddset(&defaults, SIGPIPE);
  sigaddset(&defaults, SIGCHLD);

  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  sigprocmask(SIG_BLOCK, &chld, NULL);
  int sfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sfd < 0) {
    perror("spawn-helper: signalfd");
    return 1;
  }

  buf pending = {0};
  size_t scanned = 0; /* pending's bytes known to hold no newline */
  struct pollfd fds[2] = {{channel, POLLIN, 0}, {sfd, POLLIN, 0}};
  for (;;) {
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      _exit(1);
    }
    if (fds[1].revents & POLLIN) {
      struct signalfd_siginfo si;
      while (read(sfd, &si, sizeof si) == (ssize_t)sizeof si) {
      }
      reap();
    }
    if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      need(&pending, 65536);
      ssize_t n = read(channel, pending.p + pending.n, 65536);
      if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      if (n <= 0) _exit(0);
      pending.n += (size_t)n;
      size_t from = 0;
      for (;;) {
        size_t at = scanned > from ? scanned : from;
        char *nl = memchr(pending.p + at, '\n', pending.n - at);
        if (!nl) {
          scanned = pending.n;
          break;
        }
        size_t len = (size_t)(nl - (pending.p + from));
        request r;
        if (parse(pending.p + from, len, &r)) start(&r);
        else if (r.has_id) report_error(r.id, r.file, "a request that could not be read");
        free_request(&r);
        from += len + 1;
      }
      memmove(pending.p, pending.p + from, pending.n - from);
      pending.n -= from;
      scanned -= scanned >= from ? from : scanned;
      /* A long request's room goes once it is read. */
      if (pending.n == 0 && pending.cap > (1u << 20)) {
        free(pending.p);
        pending = (buf){0};
      }
    }
  }
}
