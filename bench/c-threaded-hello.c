/*
 * The C peer of the benchmark: a threaded libfcgi app in the style of fcgi2's
 * examples/threaded.c, built against the system's libfcgi. It serves the
 * benchmark's four workloads by URL (REQUEST_URI, query string ignored):
 *
 *   /hello  "Hello World\n"
 *   /64k    64 KiB of 'a'..'z' repeated
 *   /1m     1 MiB of the same
 *   /echo   the request body, read with FCGX_GetStr, then written back
 *
 * The 64 KiB and 1 MiB bodies are generated once at start. The echo reads
 * the whole body before it answers: nginx stops sending the request body to
 * the upstream once it has passed the response header on to the client, so
 * an echo that streams stalls when the body outgrows the socket buffers.
 *
 * Unlike threaded.c it takes no accept mutex: Linux's accept() is safe to
 * call from many threads, and a mutex held while FCGX_Accept_r waits on a
 * kept connection (nginx fastcgi_keep_conn on) stalls every other thread.
 *
 * usage: c-threaded-hello <unix-socket-path | host:port> [threads] [backlog]
 * Prints "ready" on stdout once listening.
 */
#include <fcgiapp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SIZE_64K (64 * 1024)
#define SIZE_1M (1024 * 1024)

static int listen_fd;
static char *body;  /* SIZE_1M bytes; /64k sends its first SIZE_64K */

/* The path of the URI is exactly p (nothing or a query string after it). */
static int path_is(const char *uri, const char *p) {
  size_t n = strlen(p);
  return strncmp(uri, p, n) == 0 && (uri[n] == '\0' || uri[n] == '?');
}

static void send_body(FCGX_Request *req, int size) {
  FCGX_FPrintF(req->out, "Content-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n", size);
  FCGX_PutStr(body, size, req->out);
}

/* buf/cap: the thread's buffer, grown as needed and kept for the next request. */
static void echo(FCGX_Request *req, char **buf, int *cap) {
  int n, len = 0;
  for (;;) {
    if (len == *cap) {
      char *grown = realloc(*buf, (size_t)(*cap ? *cap * 2 : 64 * 1024));
      if (!grown) return;
      *buf = grown;
      *cap = *cap ? *cap * 2 : 64 * 1024;
    }
    n = FCGX_GetStr(*buf + len, *cap - len, req->in);
    if (n <= 0) break;
    len += n;
  }
  FCGX_FPrintF(req->out, "Content-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n", len);
  FCGX_PutStr(*buf, len, req->out);
}

static void *serve(void *arg) {
  FCGX_Request req;
  char *buf = NULL;
  int cap = 0;
  (void)arg;
  FCGX_InitRequest(&req, listen_fd, 0);
  while (FCGX_Accept_r(&req) >= 0) {
    const char *uri = FCGX_GetParam("REQUEST_URI", req.envp);
    if (!uri) uri = "/";
    if (path_is(uri, "/hello") || path_is(uri, "/")) {
      FCGX_PutS("Content-Type: text/plain\r\n\r\nHello World\n", req.out);
    } else if (path_is(uri, "/64k")) {
      send_body(&req, SIZE_64K);
    } else if (path_is(uri, "/1m")) {
      send_body(&req, SIZE_1M);
    } else if (path_is(uri, "/echo")) {
      echo(&req, &buf, &cap);
    } else {
      FCGX_PutS("Status: 404 Not Found\r\nContent-Type: text/plain\r\n\r\nnot found\n", req.out);
    }
    FCGX_Finish_r(&req);
  }
  free(buf);
  return NULL;
}

int main(int argc, char **argv) {
  int i, n = argc > 2 ? atoi(argv[2]) : 256, backlog = argc > 3 ? atoi(argv[3]) : 1024;
  pthread_t *threads;
  if (argc < 2) {
    fprintf(stderr, "usage: %s <socket-path|host:port> [threads] [backlog]\n", argv[0]);
    return 2;
  }
  body = malloc(SIZE_1M);
  if (!body) return 1;
  for (i = 0; i < SIZE_1M; i++) body[i] = (char)('a' + i % 26);
  FCGX_Init();
  listen_fd = FCGX_OpenSocket(argv[1], backlog);
  if (listen_fd < 0) {
    fprintf(stderr, "%s: cannot listen on %s\n", argv[0], argv[1]);
    return 1;
  }
  threads = calloc((size_t)n, sizeof *threads);
  for (i = 0; i < n; i++) pthread_create(&threads[i], NULL, serve, NULL);
  printf("ready\n");
  fflush(stdout);
  for (i = 0; i < n; i++) pthread_join(threads[i], NULL);
  return 0;
}
