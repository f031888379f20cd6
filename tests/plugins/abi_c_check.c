/* Compiles plugin.h as C99 (the ABI must not need C++). */
#include <cdcflow/plugin.h>

int cdcflow_abi_c_check(void) {
    cdcflow_event e;
    e.status = CDCFLOW_EVENT_OK;
    return (int)sizeof(cdcflow_plugin) + (int)sizeof(cdcflow_host_api) + e.status +
           (cdcflow_status_str(CDCFLOW_OK)[0] == 'o' ? 0 : 1);
}
