// Reading a pipeline file from disk (see pipeline.hpp).
#include "escape.hpp"
#include "pipeline.hpp"
#include "yaml_load.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <memory>

namespace cdcflow::host {

Result<PipelineDef> load_pipeline_file(const std::string &path, const EnvLookup &env) {
    std::string text;
    try {
        auto fail_io = [&] {
            return Status::from_abi(CDCFLOW_ERR_IO,
                                    "cannot read pipeline file " + quote(path) + ": " + std::strerror(errno));
        };
        std::unique_ptr<FILE, int (*)(FILE *)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
        if (!f) return fail_io();
        // Read one byte past the limit, so that parse_pipeline reports the size (and
        // /dev/zero does not fill the memory).
        char buf[1 << 16];
        while (text.size() <= kMaxFileBytes) {
            size_t n = std::fread(buf, 1, sizeof buf, f.get());
            if (n == 0) break;
            text.append(buf, n);
        }
        if (std::ferror(f.get())) return fail_io();
    } catch (const std::exception &e) {
        return Status::from_abi(CDCFLOW_ERR_IO, "cannot read pipeline file " + quote(path) + ": " + e.what());
    }
    return parse_pipeline(text, path, env);
}

} // namespace cdcflow::host
