/*
 * Compiled into every module library so a module whose sources are still
 * being written links as an empty archive. Holds no code on purpose.
 */
typedef int colo_module_anchor_t;
