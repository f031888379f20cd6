// The plugin's one exported symbol. Kept apart from the class so that unit
// tests can link it without a second cdcflow_plugin_entry.
#include "kafka_sink.hpp"

CDCFLOW_PLUGIN(cdcflow::kafka::KafkaSink)
