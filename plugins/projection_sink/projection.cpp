#include "projection.hpp"

#include "accounts_projection.hpp"
#include "declared/declared_projection.hpp"

namespace cdcflow::projection {

std::unique_ptr<Projection> make_projection(std::string_view name, const ProjectionOptions &opts,
                                            cdcflow::Context ctx) {
    if (name == "accounts") return std::make_unique<AccountsProjection>(opts, ctx);
    if (name == "declared")
        return std::make_unique<declared::DeclaredProjection>(opts.model, opts.locate, opts, ctx);
    return nullptr;
}

const char *builtin_projections() {
    return "accounts, declared";
}

} // namespace cdcflow::projection
