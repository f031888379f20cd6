// The plugin's one exported symbol. Kept apart from the class so that unit
// tests can compile the class without a second cdcflow_plugin_entry.
#include "kafka_source.hpp"

CDCFLOW_PLUGIN(cdcflow::kafka::KafkaSource)
