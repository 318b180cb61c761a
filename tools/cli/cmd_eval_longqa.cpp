// attnrag eval longqa: long-document QA (one document per question, any length) answered by
// InfiniRetri or by one full prompt, scored with SQuAD EM / F1 and contains-accuracy.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "args.h"
#include "attnrag/pipelines/infiniretri.hpp"
#include "attnrag/pipelines/qa_metrics.hpp"
#include "commands.h"
#include "common.h"
#include "eval_common.h"
#include "infiniretri_args.h"
#include "progress.h"

namespace attnrag::cli {

namespace {

// One line of the long-document QA format (../shared/data/README.md): id, document, question,
// answers, and for multiple choice the options (the answers then hold the correct option text).
struct LongQaItem {
    std::string id, document, question;
    std::vector<std::string> answers, options;
};

bool parse_item(const nlohmann::json& j, LongQaItem& item, std::string& error) {
    if (!get_string(j, "id", item.id, error) || !get_string(j, "document", item.document, error) ||
        !get_string(j, "question", item.question, error) || !get_strings(j, "answers", item.answers, error)) {
        return false;
    }
    if (j.contains("options") && !get_strings(j, "options", item.options, error)) return false;
    if (item.question.find_first_not_of(" \t\r\n") == std::string::npos) {
        error = "empty \"question\"";
        return false;
    }
    if (item.answers.empty()) {
        error = "\"answers\" is empty";
        return false;
    }
    return true;
}

// The question as asked: multiple-choice options are listed after it.
std::string question_text(const LongQaItem& item) {
    std::string q = item.question;
    if (!item.options.empty()) {
        q += "\nOptions:";
        for (const auto& o : item.options) q += "\n- " + o;
    }
    return q;
}

}  // namespace

int eval_longqa(int argc, char** argv) {
    std::vector<OptionSpec> specs = {
        {"mode", true, "infiniretri | full (one prompt; a longer document is cut to the window) (default infiniretri)"},
        {"limit", true, "only the first N questions"},
        {"sample", true, "N questions spread evenly over the file (after --limit)"},
        {"max-answer-tokens", true, "answer length limit (default 32)"},
        {"ctx", true, "context window in tokens (default: the model's)"},
        {"details", false, "print every question's answer"},
        {"json", false, "print one JSON object"},
        {"save-kept", true,
         "InfiniRetri: append each question's reading (its kept sentences, ranked) to this JSONL file, so "
         "the answer stage can be tried again with --answer-from-kept"},
        {"answer-from-kept", true,
         "read no document: answer every question of this --save-kept file again from its kept sentences "
         "with the answer settings given now (--answer-context, --answer-alternatives) and score it against "
         "FILE.jsonl"},
    };
    for (auto& spec : infiniretri_option_specs()) specs.push_back(std::move(spec));
    add_model_options(specs);
    Args args(argc, argv, specs);
    if (args.flag("help")) {
        std::printf("%s", usage_text("eval longqa",
                                     "FILE.jsonl [--mode infiniretri|full] [--limit N] [--sample N] [--json]\n\n"
                                     "FILE.jsonl lines: {\"id\", \"document\", \"question\", \"answers\": [str]} and "
                                     "optionally \"options\": [str]",
                                     specs)
                              .c_str());
        return 0;
    }
    pipelines::InfiniRetriOptions opt;
    opt.max_answer_tokens = static_cast<int32_t>(args.get_int("max-answer-tokens", 32));
    const long long limit = args.get_int("limit", 0), sample = args.get_int("sample", 0);
    const auto n_threads = static_cast<int32_t>(args.get_int("threads", 0));
    const auto n_ctx = static_cast<int32_t>(args.get_int("ctx", 0));
    std::string err;
    if (!read_infiniretri_options(args, opt, err)) return fail_usage("eval", err);
    Backend backend = Backend::Cpu;
    if (!read_backend(args, backend, err)) return fail_usage("eval", err);
    opt.truncate_full = true;  // the full-prompt baseline reads what fits
    if (limit < 0 || sample < 0 || n_threads < 0 || n_ctx < 0 || opt.max_answer_tokens < 1) {
        return fail_usage("eval", "--limit, --sample, --ctx and --threads must be >= 0, --max-answer-tokens >= 1");
    }
    const std::string mode = args.get_or("mode", "infiniretri");
    if (mode != "infiniretri" && mode != "full") return fail_usage("eval", "--mode must be infiniretri or full");
    if (args.positional().size() != 1) return fail_usage("eval", "give one FILE.jsonl");
    const std::string file = args.positional()[0];
    const bool json = args.flag("json"), details = args.flag("details");
    const auto save_kept = args.get("save-kept"), from_kept = args.get("answer-from-kept");
    if ((save_kept || from_kept) && mode != "infiniretri")
        return fail_usage("eval", "--save-kept and --answer-from-kept need --mode infiniretri");
    if (save_kept && from_kept) return fail_usage("eval", "--answer-from-kept reads nothing: --save-kept does not apply");
    if (from_kept && opt.answer_context_tokens <= 0)
        return fail_usage("eval", "--answer-from-kept needs --answer-context > 0 (the ranking it picks from)");
    std::ofstream kept_out;
    if (save_kept) {
        if (auto problem = output_path_problem(*save_kept, true); !problem.empty())
            return fail("eval", "--save-kept " + problem);
        kept_out.open(*save_kept, std::ios::binary | std::ios::app);
        if (!kept_out) return fail("eval", "--save-kept " + *save_kept + ": cannot open for appending");
    }

    // Pass 1 validates every line and counts them, so a malformed file fails before any model
    // work; pass 2 reads the chosen lines again (documents are not all held in memory).
    size_t n_items = 0;
    auto st = read_jsonl(file, [&](const nlohmann::json& j, std::string& error) {
        LongQaItem item;
        if (!parse_item(j, item, error)) return false;
        ++n_items;
        return true;
    });
    if (!st) return fail("eval", st.error().message);
    if (limit > 0) n_items = std::min(n_items, static_cast<size_t>(limit));
    if (n_items == 0) return fail("eval", file + ": no questions");
    const std::vector<char> chosen = spread_sample(n_items, static_cast<size_t>(sample));
    size_t n_chosen = 0;
    for (char c : chosen) n_chosen += c != 0;

    auto model = load_model_from(args, "eval");
    if (!model) return 1;
    if (auto hs = read_infiniretri_heads(args, *model, opt); !hs) return fail("eval", hs.error().message);
    auto reader = pipelines::InfiniRetri::create(*model, n_threads, n_ctx, backend);
    if (!reader) return fail("eval", reader.error().message);

    struct Row {
        std::string id, prediction;
        bool em = false, contains = false, truncated = false;
        double f1 = 0, seconds = 0;
        int64_t tokens = 0;
        int32_t kept_tokens = 0;
    };
    std::vector<Row> rows;
    Progress bar(true);
    double em = 0, f1 = 0, contains = 0, seconds = 0;
    int64_t tokens = 0;
    size_t index = 0, n_truncated = 0;
    const auto t_all = std::chrono::steady_clock::now();
    // Scores an answer and adds its row.
    auto add_row = [&](Row row, const pipelines::InfiniRetriAnswer& a, const std::vector<std::string>& answers) {
        row.prediction = a.text;
        row.tokens = a.n_tokens_read;
        row.kept_tokens = mode == "full" ? static_cast<int32_t>(a.n_tokens_read) : a.n_cache_tokens;
        row.truncated = a.truncated;
        n_truncated += a.truncated;
        row.em = pipelines::exact_match(row.prediction, answers);
        row.f1 = pipelines::f1_score(row.prediction, answers);
        row.contains = pipelines::contains_answer(row.prediction, answers);
        em += row.em;
        f1 += row.f1;
        contains += row.contains;
        seconds += row.seconds;
        tokens += row.tokens;
        if (details && !json) {
            bar.done();
            std::printf("%s  f1 %.2f%s  %s\n", row.id.c_str(), row.f1, row.contains ? "  contains" : "",
                        json_string(row.prediction).c_str());
        }
        rows.push_back(std::move(row));
        bar.update(std::to_string(rows.size()) + "/" + std::to_string(n_chosen) + " questions: F1 " +
                       std::to_string(f1 / static_cast<double>(rows.size())).substr(0, 5) + ", contains " +
                       std::to_string(contains / static_cast<double>(rows.size())).substr(0, 5),
                   true);
    };
    if (from_kept) {
        // The chosen questions (their text as asked and their answers; no documents kept), then
        // every saved reading of one of them answered again, in the saved file's order.
        std::map<std::string, LongQaItem> asked;
        st = read_jsonl(file, [&](const nlohmann::json& j, std::string& error) {
            const size_t i = index++;
            if (i >= n_items || !chosen[i]) return true;
            LongQaItem item;
            if (!parse_item(j, item, error)) return false;
            item.document.clear();
            asked.emplace(item.id, std::move(item));
            return true;
        });
        if (st) {
            n_chosen = 0;
            st = read_jsonl(*from_kept, [&](const nlohmann::json& j, std::string& error) {
                const auto it = j.is_object() && j.contains("id") && j["id"].is_string()
                                    ? asked.find(j["id"].get<std::string>())
                                    : asked.end();
                if (it == asked.end()) return true;  // not among the chosen questions
                const LongQaItem& item = it->second;
                auto read = saved_reading_from_json(j);
                if (!read || !j.contains("question") || j["question"] != question_text(item)) {
                    error = read ? item.id + " was read for another question than " + file + " asks"
                                 : "not a saved reading (as --save-kept writes them)";
                    return false;
                }
                ++n_chosen;
                Row row;
                row.id = item.id;
                row.seconds = j.value("seconds", 0.0);  // the saved reading's
                auto a = reader->answer_again(*read, question_text(item), opt);
                if (!a) {
                    error = item.id + ": " + a.error().message;
                    return false;
                }
                add_row(std::move(row), *a, item.answers);
                return true;
            });
        }
        if (st && rows.empty()) st = make_error(Errc::InvalidArgument, *from_kept + ": no saved reading of the chosen questions");
    } else {
        st = read_jsonl(file, [&](const nlohmann::json& j, std::string& error) {
            const size_t i = index++;
            if (i >= n_items) return true;
            if (!chosen[i]) return true;
            LongQaItem item;
            if (!parse_item(j, item, error)) return false;
            Row row;
            row.id = item.id;
            auto source = pipelines::SentenceSource::from_text(std::move(item.document), {}, item.id);
            pipelines::InfiniRetriOptions o = opt;
            const std::string where = "question " + std::to_string(rows.size() + 1) + "/" + std::to_string(n_chosen);
            o.on_progress = [&](const pipelines::InfiniRetriProgress& p) {
                bar.update(where + "  " + infiniretri_progress_line(p));
                return true;
            };
            const auto t0 = std::chrono::steady_clock::now();
            auto a = mode == "full" ? reader->answer_full(source, question_text(item), o)
                                    : reader->answer(source, question_text(item), o);
            row.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            if (!a) {
                error = item.id + ": " + a.error().message;
                return false;
            }
            if (kept_out.is_open()) {
                nlohmann::json saved = saved_reading_json(*a);
                saved["id"] = item.id;
                saved["question"] = question_text(item);
                saved["seconds"] = row.seconds;
                kept_out << saved.dump() << '\n' << std::flush;
                if (!kept_out) {
                    error = "--save-kept " + *save_kept + ": write failed (disk full?)";
                    return false;
                }
            }
            add_row(std::move(row), *a, item.answers);
            return true;
        });
    }
    bar.done();
    if (!st) return fail("eval", st.error().message);
    const double wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_all).count();
    const auto n = static_cast<double>(rows.size());
    const double tok_s = seconds > 0 ? static_cast<double>(tokens) / seconds : 0;
    if (json) {
        nlohmann::json out = {{"file", file},
                              {"mode", mode},
                              {"n", rows.size()},
                              {"em", em / n},
                              {"f1", f1 / n},
                              {"contains", contains / n},
                              {"truncated", n_truncated},
                              {"seconds", seconds},
                              {"seconds_per_question", seconds / n},
                              {"tokens_read", tokens},
                              {"tokens_per_s", tok_s},
                              {"wall_s", wall_s},
                              {"model", model->path()},
                              {"backend", reader->context().backend_description()},
                              {"chunk_tokens", opt.chunk_tokens},
                              {"top_k", opt.top_k},
                              {"settings", infiniretri_settings_json(opt)},
                              {"peak_rss_mib", peak_rss_mib()},
                              {"questions", nlohmann::json::array()}};
        if (from_kept) out["kept_file"] = *from_kept;
        for (const auto& r : rows) {
            out["questions"].push_back({{"id", r.id},
                                        {"prediction", r.prediction},
                                        {"em", r.em},
                                        {"f1", r.f1},
                                        {"contains", r.contains},
                                        {"truncated", r.truncated},
                                        {"seconds", r.seconds},
                                        {"tokens_read", r.tokens},
                                        {"kept_tokens", r.kept_tokens}});
        }
        std::printf("%s\n", out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
        return 0;
    }
    std::printf("%s: %zu questions, mode %s\n", file.c_str(), rows.size(), mode.c_str());
    std::printf("EM %.3f  F1 %.3f  contains %.3f", em / n, f1 / n, contains / n);
    if (n_truncated > 0) std::printf("  (%zu documents cut to the window)", n_truncated);
    std::printf("\n%.1f s per question, %.0f document tokens/s; wall %.1f s; peak RSS %.0f MiB\n", seconds / n, tok_s,
                wall_s, peak_rss_mib());
    return 0;
}

}  // namespace attnrag::cli
