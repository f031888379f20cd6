#include "plugin_loader.hpp"

#include <doctest/doctest.h>

#include <cstddef>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

using namespace cdcflow::host;
using cdcflow::Result;
using cdcflow::Status;

TEST_CASE("loader: a good plugin loads and exposes its schema") {
    auto r = load_plugin_file(CDCFLOW_TEST_PLUGIN_DIR "/gen_source.so");
    REQUIRE(r.ok());
    CHECK(r.value()->schema.name == "gen_source");
    CHECK(r.value()->schema.kind == CDCFLOW_KIND_SOURCE);
    CHECK(r.value()->desc->abi_version == CDCFLOW_ABI_VERSION);
    REQUIRE(r.value()->schema.keys.size() >= 2);
    CHECK(r.value()->schema.keys[0].name == "count");
    CHECK(*r.value()->schema.keys[0].default_value == "1000");
}

TEST_CASE("loader: a plugin built for another ABI is refused with the versions") {
    std::string f = CDCFLOW_BAD_PLUGIN_DIR "/bad_abi.so";
    auto r = load_plugin_file(f);
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().message() == "plugin '" + f + "': unsupported ABI version 999 (this host supports 1.." +
                                      std::to_string(CDCFLOW_ABI_VERSION) + ")");
}

TEST_CASE("loader: a descriptor too small for its ABI is refused, saying what was expected") {
    std::string f = CDCFLOW_BAD_PLUGIN_DIR "/small_desc.so";
    auto r = load_plugin_file(f);
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().message() == "plugin '" + f + "': descriptor too small: struct_size is 16 bytes, ABI " +
                                      std::to_string(CDCFLOW_ABI_VERSION) + " needs at least " +
                                      std::to_string(offsetof(cdcflow_plugin, callbacks) + sizeof(void *)) +
                                      " (set it to sizeof(cdcflow_plugin))");
}

TEST_CASE("loader: a shared object without the entry symbol is refused") {
    std::string f = CDCFLOW_BAD_PLUGIN_DIR "/no_symbol.so";
    auto r = load_plugin_file(f);
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().message() ==
          "plugin '" + f + "': no entry symbol 'cdcflow_plugin_entry' (not a cdcflow plugin)");
}

TEST_CASE("loader: a text file named .so is refused, naming the file") {
    auto dir = std::filesystem::temp_directory_path() / "cdcflow_loader_test";
    std::filesystem::create_directories(dir);
    std::string f = (dir / "text.so").string();
    std::ofstream(f) << "this is not an ELF file\n";
    auto r = load_plugin_file(f);
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().message().rfind("plugin '" + f + "': not a loadable shared object", 0) == 0);
    CHECK(r.status().message().find('\n') == std::string::npos);

    auto missing = load_plugin_file((dir / "missing.so").string());
    CHECK(missing.status().message() == "plugin '" + (dir / "missing.so").string() + "': no such file");
    std::filesystem::remove_all(dir);
}

TEST_CASE("registry: finds plugins by name in added folders; unknown names list the search path") {
    PluginRegistry reg;
    reg.add_front({CDCFLOW_TEST_PLUGIN_DIR});
    auto r = reg.find("passthrough");
    REQUIRE(r.ok());
    CHECK(r.value()->schema.kind == CDCFLOW_KIND_TRANSFORM);
    auto again = reg.find("passthrough");
    CHECK(again.value().get() == r.value().get()); // cached, loaded once
    auto nf = reg.find("nope");
    REQUIRE_FALSE(nf.ok());
    CHECK(nf.status().message().rfind("plugin 'nope' not found (searched " CDCFLOW_TEST_PLUGIN_DIR, 0) == 0);
    CHECK_FALSE(reg.find("../etc/passwd").ok());
}
