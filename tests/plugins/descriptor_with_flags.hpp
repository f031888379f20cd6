// A test plugin's descriptor with flags the SDK would refuse to build (a
// static_assert), for the tests of the host's own refusal of them.
#pragma once

#include <cdcflow/sdk.hpp>

namespace test_plugins {

template <typename P> const cdcflow_plugin *descriptor_with_flags(uint32_t flags) {
    static const cdcflow_plugin d = [flags] {
        cdcflow_plugin p = *cdcflow::detail::descriptor<P>();
        p.flags |= flags;
        return p;
    }();
    return &d;
}

} // namespace test_plugins
