/*
 * pause: the first process of a pod sandbox (Falconer's own, for the local node).
 *
 * It holds the sandbox's namespaces open by blocking in pause(2), reaps every child
 * that is re-parented to it (it is PID 1 of the pod's PID namespace), and exits 0 on
 * SIGINT or SIGTERM, which is how the container runtime stops a sandbox.
 * Built static (gcc -static) so the image needs nothing but this file.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int sig) {
    (void)sig;
    _exit(0);
}

static void reap(int sig) {
    (void)sig;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
}

static int handle(int sig, void (*handler)(int), int flags) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = handler;
    action.sa_flags = flags;
    sigemptyset(&action.sa_mask);
    return sigaction(sig, &action, NULL);
}

int main(void) {
    if (getpid() != 1) {
        fputs("pause: warning: not PID 1, orphans will not be reaped here\n", stderr);
    }
    if (handle(SIGINT, stop, 0) || handle(SIGTERM, stop, 0) ||
        handle(SIGCHLD, reap, SA_NOCLDSTOP | SA_RESTART)) {
        perror("pause: sigaction");
        return 1;
    }
    for (;;) {
        pause();
    }
}
