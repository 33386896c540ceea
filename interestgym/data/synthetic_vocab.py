"""Topic vocabularies and title templates for the synthetic data (:mod:`interestgym.data.synthetic`).

Twelve topics, identified by language-independent keys (:data:`TOPIC_KEYS`). For each language a
topic has a display name (the item's ``category``), four sub-topics (the item's ``subcategory``), each
with its own nouns, and topic-level nouns, adjectives and verbs. Titles fill a template's slots:

* ``{S}`` a noun of the item's sub-topic, ``{N}`` a noun of the item's topic,
* ``{A}`` an adjective, ``{V}`` a verb (the topic's own with probability
  :data:`TOPIC_WORD_PROB`, else one shared by every topic),
* ``{P}`` a place (shared by every topic).

Some nouns appear in two or three topics on purpose (``budget``: politics, finance, education;
``chip``: technology, games, autos; ``fans``: sports, entertainment, games ...), so topics overlap a
little, as real categories do. Everything here is a tuple: generation iterates in a fixed order.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Topic keys, in the order of the columns of ``truth.npy``.
TOPIC_KEYS: tuple[str, ...] = (
    "politics", "sports", "technology", "finance", "health", "entertainment",
    "travel", "food", "science", "education", "games", "autos",
)
#: Topics that context users favour in the morning (the seed: news in the morning) ...
MORNING_TOPICS: tuple[str, ...] = ("politics", "finance", "technology", "science", "health", "education")
#: ... and in the evening (the seed: entertainment at night).
EVENING_TOPICS: tuple[str, ...] = ("entertainment", "games", "sports", "travel", "food", "autos")

#: Probability that an ``{A}`` or ``{V}`` slot takes the topic's own word rather than a shared one.
TOPIC_WORD_PROB = 0.6


@dataclass(frozen=True)
class TopicVocab:
    """The words of one topic in one language."""

    name: str
    #: (sub-topic name, its nouns), four per topic.
    subtopics: tuple[tuple[str, tuple[str, ...]], ...]
    nouns: tuple[str, ...]
    adjectives: tuple[str, ...]
    verbs: tuple[str, ...]


@dataclass(frozen=True)
class LanguageVocab:
    """Everything needed to write titles in one language."""

    lang: str
    topics: tuple[TopicVocab, ...]  # aligned with TOPIC_KEYS
    adjectives: tuple[str, ...]  # shared by every topic
    verbs: tuple[str, ...]
    places: tuple[str, ...]
    templates: tuple[str, ...]
    #: Whether to upper-case a title's first letter (English).
    capitalize: bool


def _t(name, subtopics, nouns, adjectives, verbs) -> TopicVocab:
    return TopicVocab(name, tuple((s, tuple(w)) for s, w in subtopics), tuple(nouns), tuple(adjectives), tuple(verbs))


EN = LanguageVocab(
    lang="en",
    topics=(
        _t("politics",
           [("elections", ["ballot", "polls", "candidate", "voters", "primary", "turnout"]),
            ("diplomacy", ["summit", "treaty", "embassy", "sanctions", "ambassador", "alliance"]),
            ("legislation", ["bill", "amendment", "committee", "lawmakers", "hearing", "filibuster"]),
            ("publicpolicy", ["pension", "healthcare", "housing", "welfare", "subsidy", "immigration"])],
           ["government", "parliament", "senator", "minister", "election", "campaign", "policy", "reform",
            "coalition", "president", "governor", "court", "budget", "tax", "energy", "climate"],
           ["partisan", "federal", "bipartisan", "diplomatic", "electoral", "constitutional"],
           ["debates", "passes", "vetoes", "proposes", "rejects", "endorses"]),
        _t("sports",
           [("football", ["striker", "goalkeeper", "penalty", "midfielder", "derby", "transfer"]),
            ("basketball", ["dunk", "playoffs", "rebound", "point guard", "three-pointer", "draft"]),
            ("tennis", ["serve", "grand slam", "racket", "baseline", "tiebreak", "open final"]),
            ("athletics", ["marathon", "sprinter", "relay", "hurdles", "long jump", "world championships"])],
           ["coach", "season", "championship", "match", "team", "league", "players", "fans", "tournament",
            "star", "injury", "victory", "club", "trophy", "referee"],
           ["unbeaten", "athletic", "defensive", "decisive", "record-breaking", "injured"],
           ["beats", "signs", "defeats", "scores against", "trains for", "clinches"]),
        _t("technology",
           [("ai", ["chatbot", "neural network", "language model", "robot", "algorithm", "automation"]),
            ("smartphones", ["smartphone", "touchscreen", "camera", "app store", "5G network", "foldable phone"]),
            ("software", ["software update", "open source", "cloud", "operating system", "developer", "browser"]),
            ("cybersecurity", ["hackers", "malware", "password", "encryption", "data breach", "ransomware"])],
           ["startup", "gadget", "chip", "data", "platform", "internet", "device", "battery", "market",
            "engineers", "silicon", "network", "processor", "tech giant", "users"],
           ["digital", "wireless", "smart", "high-tech", "encrypted", "virtual"],
           ["launches", "unveils", "upgrades", "patches", "hacks", "codes"]),
        _t("finance",
           [("markets", ["stocks", "shares", "index", "investors", "bonds", "wall street"]),
            ("banking", ["central bank", "interest rate", "loan", "deposit", "mortgage", "lender"]),
            ("crypto", ["bitcoin", "token", "blockchain", "crypto exchange", "stablecoin", "wallet"]),
            ("economy", ["inflation", "recession", "GDP", "unemployment", "exports", "tariff"])],
           ["market", "earnings", "profit", "revenue", "dividend", "budget", "tax", "fund", "portfolio",
            "currency", "debt", "merger", "IPO", "analysts", "trading"],
           ["bullish", "bearish", "fiscal", "quarterly", "volatile", "monetary"],
           ["rallies", "plunges", "cuts", "raises", "invests in", "acquires"]),
        _t("health",
           [("fitness", ["workout", "yoga", "cardio", "gym", "stretching", "running shoes"]),
            ("nutrition", ["vitamins", "protein", "calories", "diet", "fiber", "supplements"]),
            ("medicine", ["vaccine", "hospital", "surgery", "doctors", "clinical trial", "antibiotics"]),
            ("wellness", ["sleep", "stress", "anxiety", "meditation", "therapy", "mindfulness"])],
           ["patients", "disease", "symptoms", "treatment", "healthcare", "immune system", "heart",
            "blood pressure", "cancer", "virus", "nurses", "wellbeing", "diet", "obesity", "infection"],
           ["healthy", "chronic", "medical", "preventive", "clinical", "contagious"],
           ["prevents", "treats", "cures", "boosts", "reduces", "diagnoses"]),
        _t("entertainment",
           [("movies", ["film", "director", "box office", "sequel", "premiere", "screenplay"]),
            ("music", ["album", "concert", "singer", "band", "chart", "world tour"]),
            ("tv", ["series", "episode", "sitcom", "reality show", "streaming", "season finale"]),
            ("celebrity", ["actress", "red carpet", "scandal", "paparazzi", "wedding", "fans"])],
           ["star", "Hollywood", "award", "Oscar", "studio", "cast", "trailer", "festival", "celebrity",
            "comedy", "drama", "audience", "show", "hit", "critics"],
           ["blockbuster", "hilarious", "starring", "viral", "glamorous", "animated"],
           ["stars in", "releases", "premieres", "tops", "performs", "streams"]),
        _t("travel",
           [("destinations", ["beach", "island", "old town", "resort", "landmark", "national park"]),
            ("airlines", ["flight", "airport", "airline", "passengers", "boarding", "jet lag"]),
            ("hotels", ["hotel", "booking", "suite", "hostel", "check-in", "room rates"]),
            ("adventure", ["hiking", "backpacking", "safari", "trail", "cruise", "road trip"])],
           ["tourists", "vacation", "holiday", "trip", "passport", "visa", "luggage", "itinerary",
            "travelers", "tour", "sightseeing", "tourism", "camera", "weekend getaway", "guidebook"],
           ["scenic", "exotic", "budget-friendly", "luxury", "remote", "sunny"],
           ["explores", "visits", "books", "flies to", "tours", "discovers"]),
        _t("food",
           [("recipes", ["recipe", "dinner", "soup", "pasta", "salad", "curry"]),
            ("restaurants", ["restaurant", "chef", "menu", "Michelin star", "bistro", "street food"]),
            ("baking", ["bread", "cake", "pastry", "cookies", "dough", "oven"]),
            ("drinks", ["coffee", "tea", "wine", "cocktail", "smoothie", "craft beer"])],
           ["ingredients", "flavor", "kitchen", "cuisine", "dish", "meal", "snack", "dessert", "spices",
            "breakfast", "diet", "cooking", "foodies", "taste", "dining"],
           ["delicious", "spicy", "crispy", "homemade", "vegan", "savory"],
           ["cooks", "bakes", "tastes", "serves", "grills", "seasons"]),
        _t("science",
           [("space", ["NASA", "rocket", "astronauts", "telescope", "galaxy", "Mars rover"]),
            ("biology", ["genes", "cells", "DNA", "evolution", "species", "protein"]),
            ("physics", ["quantum", "particles", "laser", "gravity", "atoms", "collider"]),
            ("climate", ["climate", "glacier", "emissions", "carbon", "ocean", "drought"])],
           ["scientists", "researchers", "study", "experiment", "discovery", "laboratory", "theory", "data",
            "energy", "journal", "fossils", "students", "universe", "observatory", "physics"],
           ["scientific", "peer-reviewed", "microscopic", "ancient", "experimental", "cosmic"],
           ["discovers", "measures", "observes", "confirms", "publishes", "detects"]),
        _t("education",
           [("schools", ["teachers", "classroom", "pupils", "curriculum", "homework", "principal"]),
            ("universities", ["university", "campus", "professor", "tuition", "degree", "graduates"]),
            ("exams", ["exam", "test scores", "admissions", "grades", "entrance exam", "scholarship"]),
            ("edtech", ["online course", "e-learning", "tutoring", "lecture videos", "MOOC", "learning app"])],
           ["students", "school", "education", "learning", "lessons", "academy", "literacy", "textbook",
            "budget", "semester", "parents", "kindergarten", "college", "diploma", "skills"],
           ["academic", "educational", "bilingual", "public", "vocational", "gifted"],
           ["teaches", "enrolls", "graduates from", "studies", "tutors", "trains"]),
        _t("games",
           [("consoles", ["console", "PlayStation", "Xbox", "controller", "Nintendo", "handheld"]),
            ("esports", ["esports", "gamers", "tournament", "streamers", "leaderboard", "championship"]),
            ("mobile", ["mobile game", "in-app purchases", "puzzle game", "gacha", "app store", "casual game"]),
            ("pc", ["graphics card", "mods", "Steam", "keyboard", "shooter", "strategy game"])],
           ["video game", "players", "level", "quest", "multiplayer", "gameplay", "developer", "expansion",
            "game", "boss fight", "team", "league", "fans", "chip", "streaming"],
           ["open-world", "competitive", "indie", "retro", "immersive", "online"],
           ["levels up", "releases", "speedruns", "patches", "streams", "beats"]),
        _t("autos",
           [("electric", ["electric car", "battery", "charging station", "range", "Tesla", "EV"]),
            ("trucks", ["pickup truck", "towing", "diesel", "trailer", "freight", "cargo"]),
            ("racing", ["Formula One", "pit stop", "grand prix", "racetrack", "driver", "lap record"]),
            ("reviews", ["test drive", "sedan", "SUV", "fuel economy", "horsepower", "dashboard"])],
           ["car", "automaker", "vehicle", "engine", "motor show", "dealership", "recall", "market",
            "energy", "chip", "drivers", "highway", "brakes", "tires", "model"],
           ["hybrid", "turbocharged", "autonomous", "fuel-efficient", "compact", "electric"],
           ["recalls", "drives", "unveils", "accelerates", "tows", "races"]),
    ),
    adjectives=("new", "big", "major", "surprising", "latest", "record", "top", "early", "local", "global"),
    verbs=("faces", "reveals", "announces", "expands", "warns about", "plans"),
    places=("London", "Tokyo", "Paris", "Berlin", "Chicago", "Sydney", "Toronto", "Seoul", "Mumbai",
            "Madrid", "Cairo", "Lima"),
    templates=(
        "{A} {S} {V} {N} in {P}",
        "{N} {V} {A} {S}",
        "How {S} {V} the {A} {N}",
        "{P} {N} {V} {S} after {A} {N}",
        "Why the {A} {S} matters for {N}",
        "{S} and {N}: what the {A} {S} means",
        "{N} in {P}: {A} {S} {V} {N}",
    ),
    capitalize=True,
)


ZH = LanguageVocab(
    lang="zh",
    topics=(
        _t("时政",
           [("选举", ["选票", "民调", "候选人", "选民", "投票率", "竞选活动"]),
            ("外交", ["峰会", "条约", "大使馆", "制裁", "大使", "联盟"]),
            ("立法", ["草案", "修正案", "委员会", "立法者", "听证会", "表决"]),
            ("民生", ["养老金", "医保", "住房", "社会保障", "补贴", "户籍"])],
           ["政府", "国务院", "人大代表", "部长", "政策", "改革", "法案", "议会", "总统", "财政预算",
            "税收", "能源", "气候", "法院"],
           ["重要", "全面", "两岸", "国际", "地方", "历史性"],
           ["审议", "通过", "否决", "提出", "签署", "部署"]),
        _t("体育",
           [("足球", ["前锋", "门将", "点球", "中场", "德比", "转会"]),
            ("篮球", ["扣篮", "季后赛", "篮板", "控卫", "三分球", "选秀"]),
            ("网球", ["发球", "大满贯", "球拍", "底线", "抢七", "公开赛"]),
            ("田径", ["马拉松", "短跑", "接力", "跨栏", "跳远", "世锦赛"])],
           ["教练", "赛季", "冠军", "比赛", "球队", "联赛", "球员", "球迷", "锦标赛", "球星", "伤病",
            "胜利", "俱乐部", "奖杯", "裁判"],
           ["不败", "顽强", "关键", "破纪录", "强势", "年轻"],
           ["击败", "签下", "战胜", "备战", "夺得", "逆转"]),
        _t("科技",
           [("人工智能", ["大模型", "机器人", "算法", "聊天机器人", "神经网络", "自动化"]),
            ("手机", ["智能手机", "折叠屏", "摄像头", "应用商店", "5G", "旗舰机"]),
            ("软件", ["系统更新", "操作系统", "云计算", "开发者", "浏览器", "代码"]),
            ("网络安全", ["黑客", "恶意软件", "密码", "加密", "数据泄露", "勒索病毒"])],
           ["创业公司", "芯片", "数据", "平台", "互联网", "设备", "电池", "市场", "工程师", "处理器",
            "科技巨头", "用户", "算力", "网络", "硬件"],
           ["智能", "无线", "数字化", "高端", "开源", "虚拟"],
           ["发布", "推出", "升级", "研发", "修复", "量产"]),
        _t("财经",
           [("股市", ["股票", "股价", "指数", "股民", "债券", "A股"]),
            ("银行", ["央行", "利率", "贷款", "存款准备金率", "房贷", "存款"]),
            ("加密货币", ["比特币", "代币", "区块链", "交易所", "稳定币", "数字钱包"]),
            ("宏观经济", ["通胀", "经济衰退", "GDP", "就业", "出口", "关税"])],
           ["市场", "财报", "利润", "营收", "分红", "财政预算", "税收", "基金", "货币", "债务", "并购",
            "上市", "分析师", "交易", "投资者"],
           ["看涨", "看跌", "季度", "稳健", "大幅", "宽松"],
           ["上涨", "下跌", "下调", "上调", "投资", "收购"]),
        _t("健康",
           [("健身", ["锻炼", "瑜伽", "有氧运动", "健身房", "拉伸", "跑步"]),
            ("营养", ["维生素", "蛋白质", "热量", "膳食", "膳食纤维", "保健品"]),
            ("医疗", ["疫苗", "医院", "手术", "医生", "临床试验", "抗生素"]),
            ("心理", ["睡眠", "压力", "焦虑", "冥想", "心理咨询", "抑郁"])],
           ["患者", "疾病", "症状", "治疗", "医保", "免疫力", "心脏", "血压", "癌症", "病毒", "护士",
            "饮食", "肥胖", "感染", "体检"],
           ["健康", "慢性", "科学", "预防性", "临床", "传染性"],
           ["预防", "治疗", "提高", "降低", "诊断", "缓解"]),
        _t("娱乐",
           [("电影", ["影片", "导演", "续集", "首映", "剧本", "院线"]),
            ("音乐", ["专辑", "演唱会", "歌手", "乐队", "排行榜", "巡演"]),
            ("综艺", ["真人秀", "节目", "嘉宾", "综艺", "收视率", "大结局"]),
            ("明星", ["女星", "红毯", "绯闻", "粉丝", "婚礼", "狗仔"])],
           ["明星", "影视", "奖项", "电影节", "片方", "演员", "预告片", "喜剧", "剧集", "观众",
            "综艺节目", "热门", "影评人", "票房", "偶像"],
           ["爆款", "搞笑", "走红", "热播", "高分", "动画"],
           ["主演", "上映", "官宣", "登顶", "演唱", "播出"]),
        _t("旅游",
           [("景点", ["海滩", "海岛", "古镇", "度假村", "地标", "国家公园"]),
            ("航空", ["航班", "机场", "航空公司", "乘客", "登机", "机票"]),
            ("酒店", ["酒店", "民宿", "套房", "青旅", "入住", "房价"]),
            ("户外", ["徒步", "背包客", "露营", "步道", "邮轮", "自驾游"])],
           ["游客", "假期", "度假", "旅行", "护照", "签证", "行李", "行程", "旅客", "旅行团", "观光",
            "旅游业", "相机", "周末游", "攻略"],
           ["风景如画", "小众", "经济实惠", "豪华", "偏远", "热门"],
           ["打卡", "游览", "预订", "飞往", "探索", "畅游"]),
        _t("美食",
           [("菜谱", ["菜谱", "晚餐", "汤", "面条", "沙拉", "咖喱"]),
            ("餐厅", ["餐厅", "主厨", "菜单", "米其林", "小馆", "街头小吃"]),
            ("烘焙", ["面包", "蛋糕", "糕点", "饼干", "面团", "烤箱"]),
            ("饮品", ["咖啡", "茶饮", "葡萄酒", "鸡尾酒", "奶茶", "精酿啤酒"])],
           ["食材", "口味", "厨房", "菜系", "菜品", "餐食", "小吃", "甜点", "香料", "早餐", "饮食",
            "烹饪", "吃货", "味道", "年夜饭"],
           ["美味", "麻辣", "酥脆", "家常", "素食", "鲜香"],
           ["烹制", "烘烤", "品尝", "供应", "烧烤", "调味"]),
        _t("科学",
           [("航天", ["火箭", "航天员", "望远镜", "星系", "火星车", "空间站"]),
            ("生物", ["基因", "细胞", "DNA", "进化", "物种", "蛋白质"]),
            ("物理", ["量子", "粒子", "激光", "引力", "原子", "对撞机"]),
            ("气候", ["气候", "冰川", "排放", "碳", "海洋", "干旱"])],
           ["科学家", "研究人员", "研究", "实验", "发现", "实验室", "理论", "数据", "能源", "期刊",
            "化石", "学生", "宇宙", "天文台", "论文"],
           ["前沿", "微观", "远古", "实验性", "基础", "跨学科"],
           ["发现", "测量", "观测", "证实", "发表", "探测"]),
        _t("教育",
           [("中小学", ["教师", "课堂", "小学生", "教学大纲", "作业", "校长"]),
            ("高校", ["大学", "校园", "教授", "学费", "学位", "毕业生"]),
            ("考试", ["高考", "分数线", "招生", "成绩", "考研", "奖学金"]),
            ("在线教育", ["网课", "在线课程", "辅导班", "慕课", "学习软件", "直播课"])],
           ["学生", "学校", "教育", "学习", "课程", "学院", "教材", "财政预算", "学期", "家长",
            "幼儿园", "大学生", "文凭", "技能", "素质教育"],
           ["学术", "双语", "公办", "职业", "优质", "义务"],
           ["招收", "开设", "毕业于", "就读", "辅导", "培养"]),
        _t("游戏",
           [("主机", ["主机", "手柄", "任天堂", "掌机", "独占游戏", "次世代"]),
            ("电竞", ["电竞", "战队", "锦标赛", "主播", "排行榜", "冠军"]),
            ("手游", ["手游", "内购", "益智游戏", "抽卡", "应用商店", "休闲游戏"]),
            ("单机", ["显卡", "模组", "键盘", "射击游戏", "策略游戏", "存档"])],
           ["电子游戏", "玩家", "关卡", "任务", "多人模式", "玩法", "开发者", "资料片", "游戏", "副本",
            "战队", "联赛", "粉丝", "芯片", "直播"],
           ["开放世界", "竞技", "独立", "复古", "沉浸式", "在线"],
           ["通关", "上线", "公测", "更新", "直播", "击败"]),
        _t("汽车",
           [("新能源", ["电动车", "电池", "充电桩", "续航", "特斯拉", "换电"]),
            ("卡车", ["皮卡", "拖车", "柴油", "货车", "物流", "重卡"]),
            ("赛车", ["一级方程式", "进站", "大奖赛", "赛道", "车手", "圈速"]),
            ("评测", ["试驾", "轿车", "SUV", "油耗", "马力", "中控台"])],
           ["汽车", "车企", "车型", "发动机", "车展", "经销商", "召回", "市场", "能源", "芯片", "车主",
            "高速", "刹车", "轮胎", "销量"],
           ["混动", "涡轮增压", "智能", "节能", "紧凑型", "豪华"],
           ["召回", "发布", "试驾", "加速", "上市", "降价"]),
    ),
    adjectives=("新", "重大", "首个", "最新", "多项", "年度"),
    verbs=("宣布", "发布", "回应", "推出", "启动", "迎来"),
    places=("北京", "上海", "广州", "深圳", "成都", "杭州", "武汉", "西安", "南京", "重庆", "香港", "海南"),
    templates=(
        "{P}{S}{V}{N}",
        "{N}{V}{A}{S}",
        "{A}{S}{V}{N}",
        "{P}{N}{V}{A}{S}",
        "{S}{V}{N}：{A}{S}{V}",
        "{A}{N}{V}{S}",
    ),
    capitalize=False,
)

LANGUAGES: dict[str, LanguageVocab] = {"en": EN, "zh": ZH}
