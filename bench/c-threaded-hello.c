/*
 * The C peer of the benchmark: a threaded libfcgi "Hello World" in the style
 * of fcgi2's examples/threaded.c, built against the system's libfcgi.
 *
 * Unlike threaded.c it takes no accept mutex: Linux's accept() is safe to
 * call from many threads, and a mutex held while FCGX_Accept_r waits on a
 * kept connection (nginx fastcgi_keep_conn on) stalls every other thread.
 *
 * usage: c-threaded-hello <unix-socket-path> [threads]
 */
#include <fcgiapp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

static int listen_fd;

static void *serve(void *arg) {
  FCGX_Request req;
  (void)arg;
  FCGX_InitRequest(&req, listen_fd, 0);
  while (FCGX_Accept_r(&req) >= 0) {
    FCGX_PutS("Content-Type: text/plain\r\n\r\nHello World\n", req.out);
    FCGX_Finish_r(&req);
  }
  return NULL;
}

int main(int argc, char **argv) {
  int i, n = argc > 2 ? atoi(argv[2]) : 256;
  pthread_t *threads;
  if (argc < 2) {
    fprintf(stderr, "usage: %s <socket-path> [threads]\n", argv[0]);
    return 2;
  }
  FCGX_Init();
  listen_fd = FCGX_OpenSocket(argv[1], 1024);
  if (listen_fd < 0) return 1;
  threads = calloc((size_t)n, sizeof *threads);
  for (i = 0; i < n; i++) pthread_create(&threads[i], NULL, serve, NULL);
  printf("ready\n");
  fflush(stdout);
  for (i = 0; i < n; i++) pthread_join(threads[i], NULL);
  return 0;
}
