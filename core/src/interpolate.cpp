// ${VAR} and ${VAR:-default} in pipeline files (see pipeline.hpp).
#include "escape.hpp"
#include "pipeline.hpp"
#include "yaml_load.hpp"

#include <cctype>
#include <cstdlib>
#include <exception>

namespace cdcflow::host {

EnvLookup process_env() {
    return [](const std::string &name) -> std::optional<std::string> {
        const char *v = std::getenv(name.c_str());
        return v ? std::optional<std::string>(v) : std::nullopt;
    };
}

// Defaults are literal text: "${A:-${B}}" is not nested (the first '}' closes).
Result<std::string> interpolate(const std::string &text, const EnvLookup &env) {
    try {
        std::string out;
        for (size_t i = 0; i < text.size(); ++i) {
            char next = i + 1 < text.size() ? text[i + 1] : '\0';
            if (text[i] != '$' || (next != '$' && next != '{')) {
                out += text[i];
                continue;
            }
            if (next == '$') {
                out += '$';
                ++i;
                continue;
            }
            size_t close = text.find('}', i + 2);
            if (close == std::string::npos) return Status::Config("unterminated '${' (missing '}')");
            std::string_view inner(text.data() + i + 2, close - i - 2);
            size_t sep = inner.find(":-");
            std::string name(inner.substr(0, sep));
            if (name.empty() || std::isdigit(static_cast<unsigned char>(name[0])) ||
                name.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_") !=
                    std::string::npos)
                return Status::Config("invalid environment variable name " + quote(name) + " in " +
                                      quote(text.substr(i, close - i + 1)));
            std::optional<std::string> value = env(name);
            if (sep != npos && (!value || value->empty())) value = std::string(inner.substr(sep + 2));
            if (!value)
                return Status::Config("undefined environment variable '" + name + "' (use ${" + name +
                                      ":-default} to give a default)");
            out += *value;
            if (out.size() > kMaxOutputBytes) return Status::Config("value too large after interpolation");
            i = close;
        }
        return out;
    } catch (const std::exception &e) {
        return Status::Config(std::string("cannot interpolate: ") + e.what());
    }
}

} // namespace cdcflow::host
