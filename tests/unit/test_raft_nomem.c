/* The Raft cluster simulation with allocation failures injected into the
 * core at random points: every -ENOMEM must leave the node safe (the
 * same invariants are checked) and the cluster live once memory is back. */
#define RAFT_SIM_NOMEM 1
#include "test_raft_sim.c"
