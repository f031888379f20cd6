/* An application in C that embeds cdcflow through the installed C API
 * (cdcflow/host.h, `pkg-config cdcflow-host`), built out of tree by
 * tests/e2e/test_embed_c.py and test_embed.py.
 *
 *   c_smoke PIPELINE.yaml drain   drains, prints /health's JSON, exits with the drain's code
 *   c_smoke PIPELINE.yaml run     starts, runs until its stdin closes, stops, exits with the stop's code
 *
 * Every state change is written to stderr as "state: <state>"; a failure as
 * "c_smoke: <code>: <message>". */
#include <cdcflow/host.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void on_state(void *user, const char *state, const char *health_json) {
    (void)user;
    (void)health_json;
    fprintf(stderr, "state: %s\n", state);
    fflush(stderr);
}

/* /health's JSON, grown until it fits (the API says how much it needs). */
static char *health(cdcflow_host *h) {
    size_t need = cdcflow_host_health_json(h, NULL, 0);
    char *buf = need ? malloc(need) : NULL;
    if (!buf || cdcflow_host_health_json(h, buf, need) != need) {
        free(buf);
        return NULL;
    }
    return buf;
}

int main(int argc, char **argv) {
    char err[1024];
    cdcflow_host *h;
    char *json;
    int rc;
    if (argc != 3 || (strcmp(argv[2], "drain") != 0 && strcmp(argv[2], "run") != 0)) {
        fprintf(stderr, "usage: c_smoke PIPELINE.yaml drain|run\n");
        return CDCFLOW_EXIT_USAGE;
    }
    h = cdcflow_host_open(argv[1], err, sizeof err);
    if (!h) {
        fprintf(stderr, "c_smoke: open: %s\n", err);
        return CDCFLOW_EXIT_INVALID;
    }
    cdcflow_host_on_state(h, on_state, NULL);
    if (strcmp(argv[2], "drain") == 0) {
        rc = cdcflow_host_drain(h, 0, err, sizeof err);
    } else {
        rc = cdcflow_host_start(h, err, sizeof err);
        if (rc == CDCFLOW_EXIT_OK) {
            fprintf(stderr, "c_smoke: started\n");
            fflush(stderr);
            while (getchar() != EOF) {
                /* runs until stdin closes (or the process is killed) */
            }
            rc = cdcflow_host_stop(h, 10000);
            cdcflow_host_last_error(h, err, sizeof err);
        }
    }
    if (rc != CDCFLOW_EXIT_OK) fprintf(stderr, "c_smoke: %d: %s\n", rc, err);
    json = health(h);
    printf("%s\n", json ? json : "");
    free(json);
    cdcflow_host_close(h);
    return rc;
}
