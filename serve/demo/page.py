"""The support-desk demo page (Gradio Blocks). Handlers reach the app's chat service and engine in-process.

`state()` returns the FastAPI app's state (chat, engine, settings, feedback), which the lifespan builds after
this page is declared; nothing here touches the model at import or build time.
"""

from __future__ import annotations

import gradio as gr

from serve.demo.conversation import (Session, default_max_tokens, describe_model, display, load_examples,
                                     model_choices, rate, send)
from serve.engine.types import SamplingParams

INTRO = ("Ask a customer question, watch the reply stream in, and rate it. Each reply shows its latency, time "
         "to first token, tokens and energy (with where that figure comes from). Tick **Compare** to have two "
         "models answer the same conversation side by side.")


UNSIZED_MAX_TOKENS = 128  # for a model whose manifest does not record its reply lengths


def _notice(errors: dict[str, str]) -> dict:
    text = "\n\n".join(errors.values())
    return gr.update(value=text, visible=bool(text))


def build_page(state) -> gr.Blocks:
    examples = load_examples()
    with gr.Blocks(title="supportkit · support desk", analytics_enabled=False) as page:
        session = gr.State(None)
        feedback_id = gr.State(None)
        with gr.Row(elem_id="masthead"):
            gr.Markdown("## Support desk\n" + INTRO, elem_id="intro")
            header = gr.Markdown(elem_id="model-facts")
        with gr.Row(equal_height=False):
            with gr.Column(scale=4):
                with gr.Row(elem_id="pickers"):
                    model_a = gr.Dropdown(label="Model", allow_custom_value=True, elem_id="model-a", scale=3)
                    compare = gr.Checkbox(label="Compare", value=False, elem_id="compare", scale=1, min_width=120,
                                          container=False)
                    model_b = gr.Dropdown(label="Model B", allow_custom_value=True, visible=False,
                                          elem_id="model-b", scale=3)
                with gr.Row():
                    chat_a = gr.Chatbot(label="Model", elem_id="chat-a", height=460, layout="bubble", buttons=["copy"],
                                        placeholder="Ask a customer question below, or pick an example.")
                    chat_b = gr.Chatbot(label="Second model", elem_id="chat-b", height=460, layout="bubble", buttons=["copy"],
                                        visible=False)
                notice = gr.Markdown(visible=False, elem_id="notice")
                with gr.Row(elem_id="composer"):
                    message = gr.Textbox(show_label=False, placeholder="The customer writes…", lines=1, max_lines=6,
                                         scale=8, elem_id="message", autofocus=True)
                    send_btn = gr.Button("Send", variant="primary", scale=1, min_width=100, elem_id="send")
                gr.Examples([[e["question"]] for e in examples], inputs=[message], label="Example customer questions",
                            example_labels=[e["label"] for e in examples], examples_per_page=9)
            with gr.Column(scale=2, min_width=300, elem_id="sidebar"):
                with gr.Accordion("System prompt and model", open=True):
                    info_a = gr.Markdown(elem_id="info-a")
                    info_b = gr.Markdown(visible=False, elem_id="info-b")
                with gr.Accordion("Feedback", open=True):
                    gr.Markdown("Rate a reply with the thumbs under it, then add a comment if you like. Customer "
                                "phone numbers, e-mails, IBANs, card and account numbers are removed before storage.")
                    comment = gr.Textbox(label="Comment on the last rated reply", lines=2, elem_id="comment")
                    comment_btn = gr.Button("Save comment", size="sm", elem_id="save-comment")
                    feedback_status = gr.Markdown(elem_id="feedback-status")
                with gr.Accordion("Generation", open=False):
                    max_tokens = gr.Slider(8, 1024, value=UNSIZED_MAX_TOKENS, step=8, label="Max new tokens", elem_id="max-tokens",
                                           info="Set from the model's own reply lengths when you pick it")
                    temperature = gr.Slider(0, 1.5, value=0, step=0.05, label="Temperature (0 = greedy)")
                clear_btn = gr.Button("New conversation", elem_id="new-conversation")
        timer = gr.Timer(3)

        def facts(s) -> str:
            dtype = str(s.engine.dtype).replace("torch.", "")
            return (f"**Base model** {s.chat.base_name} · {s.engine.device} · {dtype}"
                    f"<br>**Adapters loaded** {len(s.chat.engine.adapters())}")

        def refresh(a, b, compare_on):
            s = state()
            choices = model_choices(s.chat)
            return (facts(s), gr.update(choices=choices), gr.update(choices=choices),
                    describe_model(s.chat, a or s.chat.base_name),
                    gr.update(value=describe_model(s.chat, b or s.chat.base_name), visible=compare_on))

        def on_load():
            s = state()
            choices = model_choices(s.chat)
            adapters = sorted(s.chat.engine.adapters())
            first = adapters[0] if adapters else s.chat.base_name
            return (Session(), facts(s), gr.update(choices=choices, value=first),
                    gr.update(choices=choices, value=s.chat.base_name), describe_model(s.chat, first),
                    gr.update(value=token_default(s, first), maximum=s.settings.max_new_tokens))

        def token_default(s, model) -> int:
            return default_max_tokens(s.chat, model, UNSIZED_MAX_TOKENS, s.settings.max_new_tokens)

        page.load(on_load, outputs=[session, header, model_a, model_b, info_a, max_tokens], queue=False,
                  api_visibility="private")
        refresh_io = dict(inputs=[model_a, model_b, compare], outputs=[header, model_a, model_b, info_a, info_b],
                          queue=False, show_progress="hidden", api_visibility="private")
        timer.tick(refresh, **refresh_io)
        model_a.focus(refresh, **refresh_io)
        model_b.focus(refresh, **refresh_io)

        def on_model(m):
            return describe_model(state().chat, m), gr.update(label=m)

        def on_model_a(m):
            s = state()
            return describe_model(s.chat, m), gr.update(label=m), token_default(s, m)

        model_a.change(on_model_a, [model_a], [info_a, chat_a, max_tokens], queue=False, api_visibility="private",
                       show_progress="hidden")
        model_b.change(on_model, [model_b], [info_b, chat_b], queue=False, api_visibility="private", show_progress="hidden")

        def on_compare(on):
            return gr.update(visible=on), gr.update(visible=on), gr.update(visible=on), gr.update(label="Model A" if on else "Model")

        compare.change(on_compare, [compare], [model_b, chat_b, info_b, model_a], queue=False, api_visibility="private")

        async def on_send(text, a, compare_on, b, max_new, temp, sess):
            sess = sess or Session()
            text = (text or "").strip()
            if not text:
                yield display(sess.sides["A"]), display(sess.sides["B"]), sess, "", _notice({"": "Type a question first."})
                return
            s = state()
            models = {"A": a or s.chat.base_name}
            if compare_on:
                models["B"] = b or s.chat.base_name
            params = SamplingParams(max_new_tokens=int(max_new), do_sample=temp > 0, temperature=temp or None)
            errors = {}
            async for texts, errors in send(s.chat, s.engine, s.settings.request_timeout_s, sess, text, models, params):
                yield (display(sess.sides["A"], text, texts.get("A")), display(sess.sides["B"], text, texts.get("B")), sess, "",
                       _notice(errors))
            failed_all = len(errors) == len(models)
            yield (display(sess.sides["A"]), display(sess.sides["B"]), sess, text if failed_all else "", _notice(errors))

        send_io = dict(inputs=[message, model_a, compare, model_b, max_tokens, temperature, session],
                       outputs=[chat_a, chat_b, session, message, notice])
        # No page-level limit: the engine batches concurrent requests and bounds its own queue.
        send_btn.click(on_send, api_name="send", concurrency_limit=None, **send_io)
        message.submit(on_send, api_visibility="private", concurrency_limit=None, **send_io)

        def on_like(side):
            def handler(sess, data: gr.LikeData):
                if sess is None or not isinstance(data.index, int):
                    return None, "Nothing to rate yet."
                liked = data.liked if isinstance(data.liked, bool) else None  # "" when a thumb is taken back
                try:
                    fid = rate(state().feedback, sess, side, data.index, liked)
                except ValueError as exc:
                    return None, str(exc)
                if liked is None:
                    return None, "Rating removed."
                return fid, f"Saved: thumbs {'up' if liked else 'down'} for this reply. Add a comment below if you like."

            return handler

        chat_a.like(on_like("A"), [session], [feedback_id, feedback_status], queue=False, api_visibility="private")
        chat_b.like(on_like("B"), [session], [feedback_id, feedback_status], queue=False, api_visibility="private")

        def api_rate(sess, side, index, liked, text):
            """Rate reply `index` (its position in the chat) of side A or B, with an optional comment."""
            if sess is None or side not in ("A", "B"):
                return None, "Nothing to rate yet."
            try:
                fid = rate(state().feedback, sess, side, int(index), bool(liked))
            except ValueError as exc:
                return None, str(exc)
            if (text or "").strip() and fid:
                state().feedback.comment(fid, text)
            return fid, "Saved."

        with gr.Row(visible=False):  # inputs of the /rate API endpoint (scripts rate replies without a browser)
            r_side, r_index, r_liked, r_text = gr.Textbox(), gr.Number(precision=0), gr.Checkbox(), gr.Textbox()
        r_text.submit(api_rate, [session, r_side, r_index, r_liked, r_text], [feedback_id, feedback_status],
                      api_name="rate", queue=False)

        def on_comment(fid, text):
            if not (text or "").strip():
                return "Write a comment first.", text
            if fid is None or state().feedback is None:
                return "Rate a reply with a thumb first; the comment goes with that rating.", text
            state().feedback.comment(fid, text)
            return "Comment saved with your rating.", ""

        comment_btn.click(on_comment, [feedback_id, comment], [feedback_status, comment], queue=False, api_visibility="private")

        def on_clear():
            return Session(), [], [], None, "", gr.update(value="", visible=False)

        clear_btn.click(on_clear, outputs=[session, chat_a, chat_b, feedback_id, feedback_status, notice], queue=False, api_visibility="private")
    return page
