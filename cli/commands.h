/* commands.h: the subcommands of `cohort` (DESIGN.md §4). Each takes the
 * arguments after its name (argv[0] is the subcommand name) and returns the
 * process exit code: 0 success, 1 runtime failure, 2 bad usage or input. */
#ifndef FL_COMMANDS_H
#define FL_COMMANDS_H

int cmd_train(int argc, char **argv);
int cmd_privacy(int argc, char **argv);
int cmd_pki(int argc, char **argv);
int cmd_simulate(int argc, char **argv);
int cmd_fairness(int argc, char **argv);
int cmd_verify(int argc, char **argv);
int cmd_report(int argc, char **argv);
int cmd_export(int argc, char **argv);

#endif
