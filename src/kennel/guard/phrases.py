"""Phrase tables for the injection heuristics: short concept words, and rules that chain them.

A rule is an ordered chain of concepts with a bounded gap between links ("ignore" ... "previous"
... "instructions"), so one rule covers thousands of sentences without listing them, and words
the attacker slips in between (please, just, kindly, all of the) do not break it. Entries are
written naturally (Vietnamese with its accents, Chinese in simplified characters) and pass
through ``normalize`` when the detector compiles them, so they match accent-stripped,
traditional-character and leetspeak input alike.

Concepts are per language (``en.``, ``vi.``, ``zh.``); every rule runs over every text, since
attacks mix languages. Gaps count tokens: words for English and Vietnamese syllables, characters
for Chinese. Entries stay short (five words or syllables, eight characters; see the tests): the
tables describe how injections are built, they do not memorize examples.

Special concepts, looked up by name when present:
  ``<lang>.neg``       right before a rule's first link, it voids a ``negatable`` rule: a negation
                       ("don't ignore") or a subject ("employees ignore") means no imperative
  ``<lang>.compound``  a compound that contains a link word but means something else ("command
                       prompt", 提示音, "hướng dẫn sử dụng"): links inside one are not links
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

Family = Literal["override", "roleplay", "reveal_prompt", "encoded_request"]
Lang = Literal["en", "vi", "zh"]


@dataclass(frozen=True)
class Rule:
    family: Family
    lang: Lang
    slots: tuple[str, ...]  # concept names, matched in this order
    score: float
    gaps: tuple[int, ...] = (3,)  # tokens allowed between consecutive slots; the last repeats
    boost: str | None = None  # a concept within ``window`` tokens raises the score to ``boosted``
    boosted: float = 0.0
    veto: str | None = None  # a concept within ``window`` tokens voids the match
    window: int = 8
    negatable: bool = False
    inner_veto: str | None = None  # a concept inside the matched span voids it ("ignore MY previous...")

    def gap(self, i: int) -> int:
        return self.gaps[min(i, len(self.gaps) - 1)]


def _words(text: str) -> tuple[str, ...]:
    return tuple(w.strip() for w in text.split("|") if w.strip())


CONCEPTS: Final[dict[str, tuple[str, ...]]] = {
    # ---------------------------------------------------------------- English
    "en.neg": _words(
        "don't|do not|dont|never|not|cannot|can't|shouldn't|won't|didn't|doesn't|must not|should not|"
        "i|we|they|he|she|people|employees|staff|users|patients|often|always|sometimes|usually|"
        "keeps|keep|tend to"
    ),
    # imperative verbs that discard earlier instructions
    "en.override": _words(
        "ignore|disregard|forget|bypass|override|overrule|circumvent|pay no attention to|"
        "do not follow|don't follow|stop following|no longer follow|do not obey|don't obey|"
        "stop obeying|stop adhering to|set aside|put aside|throw out|throw away|get rid of|unlearn|"
        "nevermind|never mind|ignoring|disregarding|forgetting|bypassing|overriding"
    ),
    # verbs that only discard instructions when the object says so (skip/remove/disable ... the
    # safety filters), never with everyday objects (rules, context)
    "en.weak_override": _words(
        "skip|drop|discard|ditch|scrap|abandon|disable|deactivate|turn off|switch off|remove|delete|"
        "erase|clear|reset|lift|suspend|relax|loosen|break|violate|defy|neglect|dismiss"
    ),
    "en.scope": _words(
        "previous|prior|above|earlier|preceding|foregoing|former|initial|original|old|existing|all|any|"
        "every|your|system|current|default|built in|hidden|internal|all the|all of the|all of your|"
        "everything|anything"
    ),
    "en.after_scope": _words(
        "above|before|earlier|previously|so far|you were given|you have been given|you've been given|"
        "you received|given to you|you were told|from before|at the start|at the beginning|"
        "you were trained|in this conversation"
    ),
    "en.target": _words(
        "instructions|instruction|directions|directives|directive|guidelines|guideline|guidance|rules|"
        "rule|prompt|prompts|context|programming|training|constraints|restrictions|limitations|"
        "policies|policy|safeguards|guardrails|filters|principles|boundaries|conditioning|protocols|"
        "what you were told|what you have been told|you were told|told you|everything above|text|"
        "content|setup|preamble"
    ),
    "en.strong_target": _words(
        "instructions|instruction|directives|directive|guidelines|system prompt|prompt|programming|"
        "safeguards|guardrails|safety filters|content filters|content policy|safety guidelines|"
        "safety restrictions|safety measures|ethical guidelines|restrictions|conditioning|"
        "safety protocols|setup text|preamble|system text|initial setup"
    ),
    "en.void": _words(
        "no longer apply|no longer applies|no longer valid|are void|is void|null and void|are cancelled|"
        "are canceled|are revoked|been revoked|are obsolete|do not apply|don't apply|are overridden|"
        "been overridden|are lifted|been lifted|are suspended|are disabled|are invalid|is cancelled|"
        "is canceled|is revoked|is lifted|is disabled|disabled|deactivated|revoked|cancelled|canceled|"
        "do not exist|don't exist|never existed|does not exist|doesn't exist"
    ),
    "en.new_instructions": _words(
        "new instructions|updated instructions|new directives|your new task|your new role|your new goal|"
        "your new purpose|your only goal|your only task|your real task|new system prompt|system update|"
        "admin override|developer override|system override|override code|real instructions"
    ),
    "en.role_cue": _words(
        "you are now|you're now|you are no longer|from now on you|pretend|pretend to be|act as|acting as|"
        "roleplay|role play|imagine you are|imagine you're|behave as|become|you will be|simulate|"
        "play the role|immerse yourself|the role of|take on the role|respond as|answer as|"
        "you're no longer|thought experiment|hypothetically|hypothetical|suppose you|what if you|"
        "in a world where|let's pretend"
    ),
    "en.unbounded": _words(
        "no|without|without any|free of|free from|freed from|not bound by|unbound by|broken free of|"
        "no longer bound by|bound by|zero|lacks|with no"
    ),
    "en.limits": _words(
        "restrictions|rules|limits|limitations|filters|filter|guidelines|ethics|morals|moral|"
        "censorship|boundaries|confines|policy|policies|content policy|safeguards|guardrails|"
        "ethical guidelines|refusals"
    ),
    "en.unrestricted": _words(
        "unrestricted|unfiltered|uncensored|unbound|unshackled|unchained|amoral|immoral|unethical|"
        "evil|jailbroken|never refuse|never refuses|cannot refuse|without refusing|do anything|"
        "anything now|no matter what"
    ),
    "en.mode": _words(
        "developer mode|dev mode|god mode|sudo mode|admin mode|debug mode|maintenance mode|"
        "jailbreak mode|dan mode|unrestricted mode|unfiltered mode|uncensored mode|evil mode|"
        "opposite mode|chaos mode"
    ),
    "en.jailbreak": _words("jailbreak|jailbroken|jailbreaking"),
    "en.model_ref": _words(
        "you|your|yourself|chatgpt|gpt|assistant|ai|llm|model|bot|chatbot|claude|gemini|llama|"
        "respond|reply|replies|answer|answers|output|responses|simulate|generate|content policy|openai"
    ),
    "en.device": _words(
        "android|iphone|ios|phone|smartphone|tablet|ipad|chrome|firefox|browser|extension|windows|"
        "macos|mac|linux|xbox|playstation|settings|usb|bios|router|tv|samsung|pixel|xiaomi|huawei|"
        "laptop|pc|computer|app|device|kernel|skyrim|minecraft|console|vscode|unity|wordpress|camera|"
        "car|printer|firmware|song|album|movie|film"
    ),
    "en.dan": _words(
        "do anything now|as dan|role of dan|you are dan|be dan|dan mode|called dan|named dan|"
        "act like dan|act as dan|answer as dan|respond as dan|like dan|dan can"
    ),
    "en.character": _words(
        "stay in character|never break character|don't break character|remain in character"
    ),
    "en.reveal": _words(
        "reveal|show|print|display|output|repeat|tell|give|share|leak|dump|recite|disclose|expose|echo|"
        "list|paste|copy|type out|write out|spell out|send|provide|read back|quote|write down"
    ),
    # questions only ask for the prompt when they say whose it is ("what is YOUR system prompt")
    "en.ask": _words("what is|what's|whats|what are|what were|how is|how are|what|which"),
    "en.private": _words(
        "system|the system|hidden|initial|original|secret|internal|confidential|underlying|"
        "developer|developers|pre"
    ),
    # weaker: "the full text of the instructions" is a request, "the full list of rules" may not be
    "en.complete": _words("starting|exact|verbatim|full|entire|complete|first"),
    "en.verbatim": _words("verbatim|word for word|in full|exactly as written|character for character"),
    "en.given": _words(
        "you were given|were you given|you have been given|you received|did you receive|"
        "you were configured with|you were initialized with|you were set up with|were you told|"
        "you were told|you were programmed with|were you programmed with|you started with"
    ),
    "en.for_task": _words("for|on how|about how|regarding|to apply|to use|to take"),
    "en.set": _words("set|put|push|leave|cast|toss|lay"),
    "en.aside": _words("aside|to one side|to the side|behind"),
    "en.your": _words("your|yours|you were given|you got"),
    "en.prompt_target": _words(
        "system prompt|prompt|prompts|instructions|instruction|system message|system instructions|"
        "configuration|config|directives|preprompt|pre prompt|initial prompt|meta prompt|programming|"
        "message|messages|setup|wording|context|preamble|setup text"
    ),
    "en.strong_prompt_target": _words(
        "system prompt|prompt|instructions|system message|system instructions|configuration|"
        "directives|preprompt|initial prompt|meta prompt|programming|preamble|setup text"
    ),
    "en.text_target": _words("text|words|everything|content|all|message|lines|conversation|all of it"),
    "en.above": _words(
        "above|before this|preceding|prior|so far|at the top|starting with|before my message|before the user"
    ),
    "en.shell": _words("bash|shell|terminal|command|cmd|powershell|zsh|cli|console"),
    "en.own": _words("my|mine|i gave|i wrote|i sent|i said|our"),
    "en.decode": _words("decode|decoding|base64|hex|rot13|decrypt|unscramble"),
    "en.execute": _words(
        "follow|execute|do what it says|obey|carry out|act on|perform|do it|comply|run it|run this"
    ),
    "en.compound": _words(
        "command prompt|bash prompt|shell prompt|terminal prompt|anaconda prompt|prompt payment|"
        "prompt delivery|prompt service|prompt reply|prompt response|washing instructions|"
        "care instructions|assembly instructions|installation instructions|cooking instructions|"
        "dosage instructions|baking instructions|shipping instructions|rules of|firewall rules|"
        "css rules|eslint rules|lint rules|email rules|grammar rules|traffic rules|house rules"
    ),
    # ---------------------------------------------------------------- Vietnamese
    "vi.neg": _words(
        "đừng|không|chưa|không được|cấm|tôi|mình|em|chúng tôi|họ|nhân viên|thường|luôn|"
        "để|có thể|có nên|nên|cách|lỡ"
    ),
    "vi.override": _words(
        "bỏ qua|phớt lờ|lờ đi|lờ hết|quên|quên đi|quên hết|quên sạch|bất chấp|gạt bỏ|gạt sang một bên|"
        "vô hiệu hóa|không tuân theo|không cần tuân theo|đừng tuân theo|ngừng tuân theo|thôi tuân theo|"
        "không làm theo|đừng làm theo|ngừng làm theo|không cần làm theo|xóa bỏ|hủy bỏ|bỏ hết|bỏ đi|"
        "loại bỏ|vượt qua|phá vỡ|vi phạm|tắt|gỡ bỏ|làm ngơ|mặc kệ|dẹp bỏ|vứt bỏ|buông bỏ|phớt đi|"
        "xóa|xóa sạch|xóa hết|không tuân thủ|đừng tuân thủ|ngừng tuân thủ|thôi tuân thủ|"
        "không cần tuân thủ"
    ),
    "vi.scope": _words(
        "mọi|tất cả|toàn bộ|hết|hết thảy|các|những|trước|trước đó|trước đây|từ trước|ở trên|phía trên|"
        "bên trên|ban đầu|gốc|cũ|hệ thống|của hệ thống|của bạn|đã nhận|được giao|hiện tại|hiện có|"
        "sẵn có|mặc định|ẩn|nội bộ|bí mật|mọi thứ|những gì|tất cả những gì"
    ),
    "vi.after_scope": _words(
        "trước|trước đó|trước đây|ở trên|phía trên|ban đầu|cũ|của hệ thống|hệ thống|của bạn|bạn đã nhận|"
        "đã nhận|bạn được giao|được cung cấp|từ đầu|hiện tại|mặc định|ẩn"
    ),
    "vi.target": _words(
        "hướng dẫn|chỉ dẫn|chỉ thị|chỉ lệnh|mệnh lệnh|lệnh|lời nhắc|prompt|system prompt|quy tắc|"
        "nguyên tắc|quy định|ràng buộc|giới hạn|bộ lọc|chính sách|thiết lập|cấu hình|lập trình|"
        "huấn luyện|được dặn|đã dặn|ngữ cảnh|yêu cầu|lời dặn|dặn dò"
    ),
    "vi.strong_target": _words(
        "chỉ dẫn|chỉ thị|chỉ lệnh|lời nhắc|prompt|system prompt|bộ lọc an toàn|giới hạn an toàn|"
        "chính sách nội dung|ràng buộc|lập trình|hướng dẫn hệ thống|được dặn"
    ),
    "vi.void": _words(
        "đã bị hủy|bị hủy|không còn hiệu lực|hết hiệu lực|vô hiệu|đã bị vô hiệu hóa|không còn áp dụng|"
        "bị bãi bỏ|đã bị xóa|không còn giá trị|không tồn tại|chưa từng tồn tại|chưa từng có"
    ),
    "vi.new_instructions": _words(
        "nhiệm vụ mới|chỉ thị mới|hướng dẫn mới của bạn|vai trò mới|mục tiêu mới|lệnh mới|nhiệm vụ duy nhất"
    ),
    "vi.role_cue": _words(
        "bạn là|bạn bây giờ là|bạn giờ là|bây giờ bạn là|từ bây giờ|từ giờ|kể từ giờ|kể từ bây giờ|"
        "từ nay|đóng vai|giả vờ|giả làm|giả sử bạn là|tưởng tượng bạn là|hành động như|hành xử như|"
        "trở thành|nhập vai|với tư cách|đóng vai trò|giả sử|tưởng tượng|nếu bạn"
    ),
    "vi.unbounded": _words(
        "không|không có|không bị|không còn|không còn bị|thoát khỏi|vượt khỏi|khỏi|bất chấp|"
        "không cần|tự do khỏi"
    ),
    "vi.limits": _words("giới hạn|ràng buộc|kiểm duyệt|đạo đức|quy tắc|bộ lọc|luật lệ|chính sách|hạn chế"),
    "vi.unrestricted": _words(
        "vượt ngục|ai tự do|làm bất cứ điều gì|làm mọi thứ|không từ chối|không bao giờ từ chối|"
        "vô đạo đức|độc ác"
    ),
    "vi.mode": _words(
        "chế độ nhà phát triển|chế độ developer|developer mode|chế độ không giới hạn|"
        "chế độ không kiểm duyệt|chế độ dan|chế độ jailbreak|chế độ vượt ngục"
    ),
    "vi.jailbreak": _words("vượt ngục|jailbreak|bẻ khóa"),
    "vi.model_ref": _words(
        "bạn|trợ lý|ai|chatgpt|mô hình|trả lời|phản hồi|nội dung|kiểm duyệt|chính sách|openai"
    ),
    "vi.device": _words(
        "điện thoại|android|iphone|ios|máy tính|laptop|windows|macos|trình duyệt|chrome|xiaomi|samsung|"
        "oppo|tivi|tv|ứng dụng|usb|cài đặt|thiết bị|máy tính bảng|game|phim|prison break|tập"
    ),
    "vi.dan": _words("là dan|tư cách dan|vai dan|đóng vai dan|chế độ dan|dan có thể"),
    "vi.reveal": _words(
        "tiết lộ|hiển thị|in ra|cho xem|cho tôi xem|cho mình xem|cho biết|cho tôi biết|cho mình biết|"
        "nói ra|nói cho|viết ra|xuất ra|liệt kê|chia sẻ|đưa ra|nhắc lại|lặp lại|đọc lại|ghi lại|"
        "chép lại|công khai|gửi|trả về|kể ra|trình bày"
    ),
    "vi.private": _words(
        "hệ thống|của bạn|ban đầu|ẩn|bí mật|nội bộ|gốc|nguyên văn|y nguyên|đầy đủ|toàn bộ|phía trên|"
        "ở trên|đầu cuộc trò chuyện|nhà phát triển|bạn nhận được|được cung cấp|bạn được cung cấp"
    ),
    "vi.your": _words("của bạn|bạn được|bạn nhận"),
    "vi.given": _words(
        "bạn được cài|được cài sẵn|cài sẵn|bạn được giao|bạn được cung cấp|bạn nhận được|"
        "bạn được dặn|bạn được lập trình|được thiết lập|thiết lập sẵn"
    ),
    "vi.verbatim": _words("nguyên văn|y nguyên|từng chữ|từng từ|đầy đủ"),
    "vi.set": _words("gạt|để|đặt|bỏ|đẩy"),
    "vi.aside": _words("sang một bên|qua một bên|sang bên|ra một bên"),
    "vi.prompt_target": _words(
        "lời nhắc|prompt|system prompt|hướng dẫn|chỉ dẫn|chỉ thị|chỉ lệnh|câu lệnh|cấu hình|thiết lập|"
        "quy tắc|tin nhắn hệ thống|đoạn văn bản|văn bản|nội dung"
    ),
    "vi.strong_prompt_target": _words(
        "lời nhắc|prompt|system prompt|chỉ dẫn|chỉ thị|chỉ lệnh|cấu hình|thiết lập|tin nhắn hệ thống|"
        "hướng dẫn hệ thống"
    ),
    "vi.question": _words("là gì|là như thế nào|gồm những gì|ra sao"),
    "vi.decode": _words("giải mã|dịch ngược|decode"),
    "vi.execute": _words("làm theo|thực hiện|thực thi|chạy|tuân theo|làm đúng như"),
    "vi.compound": _words(
        "hướng dẫn sử dụng|hướng dẫn lắp ráp|hướng dẫn cài đặt|hướng dẫn nấu|lệnh chuyển tiền|trước khi"
    ),
    # ---------------------------------------------------------------- Chinese
    "zh.neg": _words(
        "不要|别|不能|请勿|勿|不可|不得|千万别|不会|不应|不该|总是|经常|常常|老是|如何|怎么|怎样|"
        "我们|他们|员工|用户|人们"
    ),
    "zh.override": _words(
        "忽略|忽视|无视|不理会|不要理会|别理会|不用理会|不要管|别管|不用管|忘记|忘掉|忘了|忘却|抛开|"
        "抛弃|丢弃|丢掉|放弃|放下|跳过|绕过|绕开|规避|违背|违反|不再遵守|不要遵守|不要再遵守|停止遵守|"
        "不必遵守|不用遵守|无需遵守|不再遵循|停止遵循|推翻|覆盖|清除|作废|废除|取消|关闭|禁用|解除|"
        "摆脱|突破|撇开|不用再管|不要再管|别再管|不再管|不再理会"
    ),
    "zh.scope": _words(
        "之前|以前|先前|此前|上面|上述|前面|以上|原来|原有|原始|原先|最初|初始|所有|全部|一切|任何|"
        "系统|你的|您的|既有|已有|现有|预设|默认|旧|你收到|给你|开发者"
    ),
    "zh.target": _words(
        "指令|指示|提示|提示词|系统提示|设定|规则|命令|约束|限制|准则|守则|规范|政策|策略|要求|说明|"
        "编程|过滤|过滤器|审查|审核|安全检查|上下文|训练|规定|指南|内容|告诉你的|给你的"
    ),
    "zh.strong_target": _words(
        "指令|提示词|系统提示|系统指令|设定|编程设定|安全限制|过滤器|过滤|审查|内容政策|安全策略|约束|"
        "准则|守则|安全规定|安全规则"
    ),
    "zh.void": _words(
        "已失效|失效|作废|已作废|已废除|不再适用|不再有效|无效|已取消|被取消|已被覆盖|被覆盖|已解除|"
        "不存在|从未存在"
    ),
    "zh.new_instructions": _words(
        "新的指令|新指令|新的系统设定|新的设定|新的任务|新任务|你的新任务|唯一任务|系统更新"
    ),
    "zh.role_cue": _words(
        "你现在是|你是一个|你是|你现在|现在你是|从现在开始|从现在起|从今以后|扮演|假装|模拟|充当|"
        "作为|身份|角色扮演|成为|变成|你将|你不再是|切换到|处于|假设|假如|想象|如果你"
    ),
    "zh.unbounded": _words("没有|没有任何|不受|不受任何|无|摆脱|脱离|不加|不加任何|不用遵守|不必遵守"),
    "zh.limits": _words("限制|约束|规则|道德|审查|过滤|底线|政策|规定|束缚"),
    "zh.unrestricted": _words("不道德|邪恶|越狱|私人黑客|不拒绝|永不拒绝|不会拒绝"),
    "zh.anything": _words("任何事情|做任何事|任何问题|任何内容|所有问题"),
    "zh.mode": _words(
        "开发者模式|开发模式|无限制模式|不受限制的模式|越狱模式|dan模式|上帝模式|邪恶模式|无审查模式"
    ),
    "zh.jailbreak": _words("越狱|破解限制"),
    "zh.model_ref": _words("你|您|ai|助手|模型|chatgpt|gpt|回答|回复|输出|生成|政策"),
    "zh.device": _words(
        "手机|安卓|android|苹果|iphone|ios|ipad|电脑|设置|浏览器|chrome|扩展|插件|小米|华为|平板|usb|"
        "windows|电视|选项|开发板|保修|电影"
    ),
    "zh.dan": _words("扮演dan|作为dan|以dan|你是dan|dan的身份|dan可以"),
    "zh.reveal": _words(
        "显示|展示|告诉我|告诉|输出|打印|泄露|透露|公开|重复|复述|说出|给出|列出|写出|发出|发给我|提供|"
        "背诵|念出|照抄|原样输出|暴露|分享|贴出|给我看|展现|导出"
    ),
    "zh.private": _words(
        "你的|您的|你收到|给你|系统|初始|原始|隐藏|内部|秘密|最初|第一条|上面|以上|前面|完整|全部|开发者|你被"
    ),
    "zh.your": _words("你的|您的"),
    "zh.given": _words("你收到的|收到的|给你的|你被给予的|你得到的|你被设定的"),
    "zh.first": _words("最开始|一开始|开头|最初|初始|第一条|最早"),
    "zh.prompt_target": _words(
        "提示词|系统提示|提示|指令|设定|规则|配置|系统消息|消息|内容|说明|指示|prompt"
    ),
    "zh.strong_prompt_target": _words("提示词|系统提示|提示|指令|设定|配置|系统消息|指示|prompt"),
    "zh.ba": _words("把|将"),
    "zh.question": _words("是什么|是啥|有哪些|是怎样|写了什么|有什么|说了什么|包含什么|写的什么"),
    "zh.decode": _words("解码|解密|base64"),
    "zh.execute": _words("执行|照做|照着做|按照|遵照|运行|遵守"),
    "zh.compound": _words(
        "提示音|提示框|错误提示|报错提示|温馨提示|提示信息|友情提示|操作说明|使用说明|安装说明|说明书|"
        "游戏规则|交通规则|比赛规则"
    ),
}

# Filler words the compound splitter may use between concept words ("ignoreallpreviousinstructions").
FILLERS: Final[tuple[str, ...]] = _words(
    "the|a|an|to|of|and|me|my|you|your|now|all|any|please|are|is|be|in|on|with|this|that|from|for|it|"
    "say|print|tell|secret|key|password|write|then|just|new|what|were|told"
)

# Common words one edit away from a concept word: a typo tolerance must not turn them into it.
REAL_WORDS: Final[frozenset[str]] = frozenset(
    _words(
        "content|contest|forged|repent|reheat|revel|revels|reveals|prompts|prompted|display|ignorant|overwrite|overrode|bypassed|forgets|forgot|systemic|systems|origins"
    )
)

_OVERRIDE: Final[Family] = "override"
_ROLEPLAY: Final[Family] = "roleplay"
_REVEAL: Final[Family] = "reveal_prompt"
_ENCODED: Final[Family] = "encoded_request"

# One rule a line reads as a table; the formatter would break the long ones apart.
# fmt: off
RULES: Final[tuple[Rule, ...]] = (
    # ---------------------------------------------------------------- English
    Rule(_OVERRIDE, "en", ("override", "scope", "target"), 0.9, (3, 2), negatable=True, inner_veto="own"),
    Rule(_OVERRIDE, "en", ("override", "target", "after_scope"), 0.85, (3, 3), negatable=True,
         inner_veto="own"),
    Rule(_OVERRIDE, "en", ("weak_override", "scope", "strong_target"), 0.8, (3, 2), negatable=True,
         inner_veto="own"),
    Rule(_OVERRIDE, "en", ("weak_override", "strong_target", "after_scope"), 0.75, (3, 3), negatable=True),
    Rule(_OVERRIDE, "en", ("override", "strong_target"), 0.5, (2,), negatable=True, inner_veto="own"),
    Rule(_OVERRIDE, "en", ("set", "scope", "target", "aside"), 0.85, (1, 2, 2)),
    Rule(_OVERRIDE, "en", ("scope", "strong_target", "void"), 0.8, (2, 2)),
    Rule(_OVERRIDE, "en", ("scope", "target", "void"), 0.45, (2, 2)),
    Rule(_OVERRIDE, "en", ("new_instructions",), 0.35),
    Rule(_ROLEPLAY, "en", ("role_cue", "unbounded", "limits"), 0.85, (8, 3)),
    Rule(_ROLEPLAY, "en", ("role_cue", "unrestricted"), 0.8, (8,)),
    Rule(_ROLEPLAY, "en", ("unbounded", "limits"), 0.35, (2,)),
    Rule(_ROLEPLAY, "en", ("mode",), 0.3, boost="model_ref", boosted=0.8, veto="device"),
    Rule(_ROLEPLAY, "en", ("jailbreak",), 0.3, boost="model_ref", boosted=0.7, veto="device"),
    Rule(_ROLEPLAY, "en", ("dan",), 0.8),
    Rule(_ROLEPLAY, "en", ("character",), 0.5),
    Rule(_REVEAL, "en", ("reveal", "private", "prompt_target"), 0.85, (6, 3), veto="shell", window=3),
    Rule(_REVEAL, "en", ("reveal", "complete", "prompt_target"), 0.8, (6, 1), veto="shell", window=3),
    Rule(_REVEAL, "en", ("reveal", "complete", "strong_prompt_target"), 0.8, (6, 3), veto="shell", window=3),
    Rule(_REVEAL, "en", ("reveal", "your", "strong_prompt_target"), 0.8, (3, 2), veto="for_task", window=1),
    Rule(_REVEAL, "en", ("reveal", "strong_prompt_target", "your"), 0.75, (3, 2)),
    Rule(_REVEAL, "en", ("reveal", "strong_prompt_target", "given"), 0.8, (5, 1)),
    Rule(_REVEAL, "en", ("ask", "your", "strong_prompt_target"), 0.75, (1, 2), veto="for_task", window=1),
    Rule(_REVEAL, "en", ("ask", "strong_prompt_target", "given"), 0.75, (1, 2)),
    Rule(_REVEAL, "en", ("strong_prompt_target", "verbatim"), 0.5, (3,)),
    Rule(_REVEAL, "en", ("verbatim", "strong_prompt_target"), 0.5, (3,)),
    Rule(_REVEAL, "en", ("reveal", "text_target", "above"), 0.8, (3, 2)),
    Rule(_ENCODED, "en", ("decode", "execute"), 0.4, (5,)),
    # ---------------------------------------------------------------- Vietnamese
    Rule(_OVERRIDE, "vi", ("override", "scope", "target"), 0.9, (3, 2), negatable=True),
    Rule(_OVERRIDE, "vi", ("override", "target", "after_scope"), 0.85, (3, 3), negatable=True),
    Rule(_OVERRIDE, "vi", ("override", "strong_target"), 0.55, (3,), negatable=True),
    Rule(_OVERRIDE, "vi", ("override", "target"), 0.4, (2,), negatable=True),
    Rule(_OVERRIDE, "vi", ("set", "scope", "target", "aside"), 0.85, (2, 2, 3)),
    Rule(_OVERRIDE, "vi", ("scope", "strong_target", "void"), 0.8, (2, 3)),
    Rule(_OVERRIDE, "vi", ("scope", "target", "void"), 0.45, (2, 3)),
    Rule(_OVERRIDE, "vi", ("new_instructions",), 0.35),
    Rule(_ROLEPLAY, "vi", ("role_cue", "unrestricted"), 0.8, (10,)),
    Rule(_ROLEPLAY, "vi", ("role_cue", "unbounded", "limits"), 0.8, (10, 2)),
    Rule(_ROLEPLAY, "vi", ("unbounded", "limits"), 0.3, (2,)),
    Rule(_ROLEPLAY, "vi", ("unrestricted",), 0.3),
    Rule(_ROLEPLAY, "vi", ("mode",), 0.3, boost="model_ref", boosted=0.8, veto="device"),
    Rule(_ROLEPLAY, "vi", ("jailbreak",), 0.3, boost="model_ref", boosted=0.7, veto="device"),
    Rule(_ROLEPLAY, "vi", ("dan",), 0.8),
    Rule(_REVEAL, "vi", ("reveal", "private", "prompt_target"), 0.85, (4, 3)),
    Rule(_REVEAL, "vi", ("reveal", "prompt_target", "private"), 0.85, (4, 3)),
    Rule(_REVEAL, "vi", ("strong_prompt_target", "your", "question"), 0.8, (3, 2)),
    Rule(_REVEAL, "vi", ("prompt_target", "given", "question"), 0.75, (2, 3)),
    Rule(_REVEAL, "vi", ("verbatim", "strong_prompt_target"), 0.6, (2,)),
    Rule(_ENCODED, "vi", ("decode", "execute"), 0.4, (6,)),
    # ---------------------------------------------------------------- Chinese (gaps in characters)
    Rule(_OVERRIDE, "zh", ("override", "scope", "target"), 0.9, (4, 6), negatable=True),
    Rule(_OVERRIDE, "zh", ("override", "strong_target"), 0.6, (8,), negatable=True),
    Rule(_OVERRIDE, "zh", ("override", "target"), 0.4, (4,), negatable=True),
    Rule(_OVERRIDE, "zh", ("ba", "scope", "target", "override"), 0.85, (3, 6, 6)),
    Rule(_OVERRIDE, "zh", ("scope", "strong_target", "void"), 0.8, (3, 3)),
    Rule(_OVERRIDE, "zh", ("scope", "target", "void"), 0.45, (3, 3)),
    Rule(_OVERRIDE, "zh", ("new_instructions",), 0.35),
    Rule(_ROLEPLAY, "zh", ("role_cue", "unrestricted"), 0.8, (16,)),
    Rule(_ROLEPLAY, "zh", ("role_cue", "unbounded", "limits"), 0.8, (16, 4)),
    Rule(_ROLEPLAY, "zh", ("unbounded", "limits"), 0.3, (4,)),
    Rule(_ROLEPLAY, "zh", ("role_cue", "anything"), 0.45, (8,)),
    Rule(_ROLEPLAY, "zh", ("unrestricted",), 0.3),
    Rule(_ROLEPLAY, "zh", ("mode",), 0.3, boost="model_ref", boosted=0.8, veto="device", window=12),
    Rule(_ROLEPLAY, "zh", ("jailbreak",), 0.3, boost="model_ref", boosted=0.7, veto="device", window=10),
    Rule(_ROLEPLAY, "zh", ("dan",), 0.8),
    Rule(_REVEAL, "zh", ("reveal", "private", "prompt_target"), 0.85, (3, 4)),
    Rule(_REVEAL, "zh", ("ba", "private", "prompt_target", "reveal"), 0.85, (2, 4, 8)),
    Rule(_REVEAL, "zh", ("your", "strong_prompt_target", "question"), 0.8, (4, 2)),
    Rule(_REVEAL, "zh", ("first", "given", "question"), 0.7, (2, 6)),
    Rule(_ENCODED, "zh", ("decode", "execute"), 0.4, (6,)),
)
# fmt: on
