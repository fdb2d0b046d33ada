/* cmd_report.c: `cohort report` (DESIGN.md §4). Placeholder until implemented. */
#include <stdio.h>

#include "cli/commands.h"

int cmd_report(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "cohort report: not implemented yet\n");
    return 2;
}
