/* cmd_verify.c: `cohort verify` (DESIGN.md §4). Placeholder until implemented. */
#include <stdio.h>

#include "cli/commands.h"

int cmd_verify(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "cohort verify: not implemented yet\n");
    return 2;
}
