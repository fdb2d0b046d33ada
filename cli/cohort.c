/* cohort.c: the operator CLI, a thin dispatcher over cli/cmd_*.c
 * (DESIGN.md §4). */
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *summary;
} commands[] = {
    {"train", cmd_train, "centralized training on one dataset (the baseline)"},
    {"privacy", cmd_privacy, "privacy accounting: epsilon for a schedule, or sigma for a target"},
    {"pki", cmd_pki, "the federation CA: init, issue, revoke, crl, list certificates"},
    {"simulate", cmd_simulate, "a whole federation on this machine (aggregator + N clients)"},
    {"fairness", cmd_fairness, "fairness and bias audit of a predictions file"},
    {"verify", cmd_verify, "check an aggregator database's audit-log chain and signatures"},
    {"report", cmd_report, "audit report (HTML + JSON) from an aggregator database"},
    {"export", cmd_export, "a global model out of the database, as ONNX or a Cohort model file"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: cohort <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\nRun 'cohort <command> --help' for a command's options.\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "cohort: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
