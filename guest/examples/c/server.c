/*
 * The seed's server in C, written the usual POSIX way: a listening socket,
 * poll() over it and every client, a blocking accept() when the listener
 * is readable (the host's readiness is exact, as poll(2)'s: accept then
 * never blocks), recv() and send() on each client that is.
 *
 * It listens on LISTEN_ADDR (the address the host grants it), answers
 * every read of up to 2048 bytes with `c socket server : N` (N random in
 * 0..100, one reply per line), serves many clients at once, and logs each
 * connect, payload and disconnect.
 *
 * Build: see build.sh beside this file (clang and lld from Debian, the
 * WASI 0.2 C library the Rust toolchain ships for wasm32-wasip2).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/*
 * Debian's wasi-libc headers predate WASI 0.2 sockets and hide these
 * (`#ifdef __wasilibc_unmodified_upstream`); the WASI 0.2 C library this
 * is linked with has them, with these standard signatures.
 */
int socket(int domain, int type, int protocol);
int bind(int fd, const struct sockaddr *addr, socklen_t len);
int listen(int fd, int backlog);
int getpeername(int fd, struct sockaddr *addr, socklen_t *len);

#define MAX_CLIENTS 1000
#define READ_SIZE 2048

/* Parses "A.B.C.D:PORT" into `addr`; 0 on success. */
static int parse_addr(const char *text, struct sockaddr_in *addr) {
    char host[64];
    const char *colon = strrchr(text, ':');
    if (colon == NULL || (size_t)(colon - text) >= sizeof host) {
        return -1;
    }
    memcpy(host, text, (size_t)(colon - text));
    host[colon - text] = '\0';
    memset(addr, 0, sizeof *addr);
    addr->sin_family = AF_INET;
    addr->sin_port = htons((unsigned short)atoi(colon + 1));
    return inet_pton(AF_INET, host, &addr->sin_addr) == 1 ? 0 : -1;
}

/* The peer of `fd` as "A.B.C.D:PORT", for the log. */
static void describe_peer(int fd, char *out, size_t size) {
    struct sockaddr_in peer = {0};
    socklen_t len = sizeof peer;
    char ip[INET_ADDRSTRLEN] = "?";
    if (getpeername(fd, (struct sockaddr *)&peer, &len) == 0) {
        inet_ntop(AF_INET, &peer.sin_addr, ip, sizeof ip);
    }
    snprintf(out, size, "%s:%u", ip, (unsigned)ntohs(peer.sin_port));
}

int main(void) {
    const char *listen_addr = getenv("LISTEN_ADDR");
    struct sockaddr_in addr;
    if (listen_addr == NULL || parse_addr(listen_addr, &addr) != 0) {
        fprintf(stderr, "LISTEN_ADDR is not an IPv4 address:port\n");
        return 1;
    }
    int listener = socket(AF_INET, SOCK_STREAM, 0);
    if (listener < 0 || bind(listener, (struct sockaddr *)&addr, sizeof addr) != 0 ||
        listen(listener, 128) != 0) {
        fprintf(stderr, "cannot listen on %s: %s\n", listen_addr, strerror(errno));
        return 1;
    }
    printf("listening on %s\n", listen_addr);
    fflush(stdout);

    /* fds[0] is the listener; the clients follow. */
    static struct pollfd fds[MAX_CLIENTS + 1];
    nfds_t count = 1;
    fds[0].fd = listener;
    fds[0].events = POLLIN;
    static char buf[READ_SIZE];
    for (;;) {
        if (poll(fds, count, -1) < 0) {
            fprintf(stderr, "poll: %s\n", strerror(errno));
            return 1;
        }
        for (nfds_t i = count; i-- > 1;) {
            if (fds[i].revents == 0) {
                continue;
            }
            int fd = fds[i].fd;
            char peer[32];
            describe_peer(fd, peer, sizeof peer);
            ssize_t n = recv(fd, buf, sizeof buf, 0);
            if (n <= 0) {
                printf("%s: disconnected\n", peer);
                fflush(stdout);
                close(fd);
                fds[i] = fds[--count];
                continue;
            }
            printf("%s: %.*s", peer, (int)n, buf);
            if (buf[n - 1] != '\n') {
                printf("\n");
            }
            fflush(stdout);
            char reply[64];
            int len = snprintf(reply, sizeof reply, "c socket server : %u\n",
                               (unsigned)arc4random_uniform(100));
            if (send(fd, reply, (size_t)len, 0) != len) {
                printf("%s: the reply could not be sent\n", peer);
            }
        }
        if (fds[0].revents & (POLLERR | POLLHUP | POLLNVAL)) {
            fprintf(stderr, "the listener failed\n");
            return 1;
        }
        if (fds[0].revents & POLLIN) {
            /* Readable means a client waits: this accept does not block. */
            int client = accept(listener, NULL, NULL);
            if (client < 0) {
                continue;
            }
            if (count > MAX_CLIENTS) {
                close(client);
                continue;
            }
            char peer[32];
            describe_peer(client, peer, sizeof peer);
            printf("%s: connected\n", peer);
            fflush(stdout);
            fds[count].fd = client;
            fds[count].events = POLLIN;
            fds[count].revents = 0;
            count++;
        }
    }
}
