/* cmd_fairness.c: `cohort fairness` (DESIGN.md §4). Placeholder until implemented. */
#include <stdio.h>

#include "cli/commands.h"

int cmd_fairness(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "cohort fairness: not implemented yet\n");
    return 2;
}
