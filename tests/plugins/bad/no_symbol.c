/* A shared object without the cdcflow entry symbol. */
#include <cdcflow/plugin.h>

CDCFLOW_EXPORT int not_a_plugin(void) { return 42; }
