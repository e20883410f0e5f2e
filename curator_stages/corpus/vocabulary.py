"""Real words for synthetic prose: stop words and content words per language, and junk templates.

Stop words matter: the Gopher stop-word rule keeps a document only when it has enough of them,
so generated prose mixes stop words at a natural rate (about 40% of tokens). Content words are
drawn with a Zipf-like frequency so word statistics (mean length, repetition) look like text.
"""

from __future__ import annotations

STOP_WORDS: dict[str, str] = {
    "en": "the of and to a in is that it was for on are as with his they at be this have from or "
          "one had by but not what all were we when your can said there use an each which she do "
          "how their if will up other about out many then them these so some her would make like "
          "him into time has look two more go see no way could people my than first been who its "
          "now",
    "de": "der die und in den von zu das mit sich des auf für ist im dem nicht ein eine als auch "
          "es an werden aus er hat dass sie nach wird bei einer um am sind noch wie einem über "
          "einen so zum war haben nur oder aber vor zur bis mehr durch man sein wurde sei",
    "fr": "le de la et les des en un du une que est pour qui dans par plus pas au sur ne se ce il "
          "sont avec ou son elle nous vous leur mais comme on tout aux cette été ses fait était "
          "peut entre très sans deux même",
    "es": "de la que el en y a los se del las un por con no una su para es al lo como más o pero "
          "sus le ha me si sin sobre este ya entre cuando todo esta ser son dos también fue había "
          "era muy hasta desde",
    "ru": "и в не на я что он с как а то все она так его но да ты к у же вы за бы по только ее "
          "мне было вот от меня еще нет о из ему теперь когда даже ну вдруг ли если уже или ни "
          "быть был него до вас нибудь опять уж",
}

CONTENT_WORDS: dict[str, str] = {
    "en": "water history system government company market people research development family "
          "children school student program problem service information community health "
          "business money policy report country economy city river mountain village island "
          "weather climate energy power network computer software machine language library "
          "museum theatre music garden kitchen window morning evening winter summer season "
          "journey station railway airport bridge harbour factory farmer teacher doctor nurse "
          "engineer scientist artist writer reader manager worker council committee election "
          "parliament minister president century decade history tradition culture religion "
          "science physics chemistry biology medicine hospital patient treatment disease "
          "practice method process result analysis evidence example question answer reason "
          "difference experience knowledge education university college course lecture "
          "chapter article review letter message picture camera colour surface structure "
          "building house street corner road traffic vehicle engine fuel price value growth "
          "industry product customer quality standard material resource forest ocean coast "
          "animal plant species population region province territory border agreement "
          "decision meeting discussion argument opinion interest support pressure movement "
          "increase reduce improve consider describe explain develop provide include remain "
          "become return create produce receive believe suggest discover recognise represent "
          "important different possible available local national international public private "
          "social political economic natural historical modern ancient traditional original "
          "several various certain particular significant common general recent early late "
          "quickly slowly carefully usually often rarely almost perhaps however therefore",
    "de": "Wasser Geschichte Regierung Unternehmen Markt Menschen Forschung Entwicklung Familie "
          "Kinder Schule Programm Problem Information Gemeinde Gesundheit Geld Politik Bericht "
          "Land Wirtschaft Stadt Fluss Berg Dorf Wetter Klima Energie Netzwerk Sprache "
          "Bibliothek Museum Theater Musik Garten Küche Fenster Morgen Abend Winter Sommer "
          "Reise Bahnhof Brücke Hafen Fabrik Lehrer Arzt Ingenieur Wissenschaft Künstler "
          "Jahrhundert Tradition Kultur Medizin Krankenhaus Methode Ergebnis Beispiel Frage "
          "Antwort Grund Erfahrung Wissen Universität Straße Verkehr Preis Wachstum Industrie "
          "Qualität Wald Küste Region Grenze Entscheidung Meinung Bewegung entwickeln bieten "
          "bleiben werden erhalten glauben wichtig verschieden möglich öffentlich sozial "
          "politisch wirtschaftlich natürlich modern alt allgemein bekannt neue große kleine "
          "schnell langsam häufig selten vielleicht jedoch deshalb zwischen während gegen",
    "fr": "eau histoire gouvernement entreprise marché gens recherche développement famille "
          "enfants école programme problème service information communauté santé argent "
          "politique rapport pays économie ville rivière montagne village temps climat énergie "
          "réseau langue bibliothèque musée théâtre musique jardin cuisine fenêtre matin soir "
          "hiver été voyage gare pont port usine professeur médecin ingénieur science artiste "
          "siècle tradition culture hôpital méthode résultat exemple question réponse raison "
          "expérience connaissance université rue prix croissance industrie qualité forêt "
          "côte région frontière décision opinion mouvement développer fournir devenir "
          "recevoir croire important différent possible public social politique économique "
          "naturel moderne ancien général nouveau grand petit rapidement lentement souvent "
          "rarement peut-être cependant pourtant ensemble pendant contre toujours jamais",
    "es": "agua historia gobierno empresa mercado gente investigación desarrollo familia niños "
          "escuela programa problema servicio información comunidad salud dinero política "
          "informe país economía ciudad río montaña pueblo tiempo clima energía red idioma "
          "biblioteca museo teatro música jardín cocina ventana mañana tarde invierno verano "
          "viaje estación puente puerto fábrica maestro médico ingeniero ciencia artista siglo "
          "tradición cultura hospital método resultado ejemplo pregunta respuesta razón "
          "experiencia conocimiento universidad calle precio crecimiento industria calidad "
          "bosque costa región frontera decisión opinión movimiento desarrollar ofrecer "
          "convertir recibir creer importante diferente posible público social político "
          "económico natural moderno antiguo general nuevo grande pequeño rápidamente "
          "lentamente siempre nunca quizás embargo durante contra juntos",
    "ru": "вода история правительство компания рынок люди исследование развитие семья дети "
          "школа программа проблема служба информация общество здоровье деньги политика "
          "доклад страна экономика город река гора деревня погода климат энергия сеть язык "
          "библиотека музей театр музыка сад кухня окно утро вечер зима лето путешествие "
          "вокзал мост порт завод учитель врач инженер наука художник век традиция культура "
          "больница метод результат пример вопрос ответ причина опыт знание университет "
          "улица цена рост промышленность качество лес берег область граница решение мнение "
          "движение развивать получать становиться верить важный разный возможный "
          "общественный социальный политический экономический природный современный древний "
          "общий новый большой маленький быстро медленно часто редко возможно однако поэтому",
}

#: Chinese has no spaces: words are joined directly; punctuation is full width.
ZH_WORDS = ("我们 他们 这个 那个 中国 国家 发展 经济 社会 政府 城市 人民 历史 文化 教育 学生 学校 "
            "老师 研究 科学 技术 问题 方法 结果 时间 今天 明天 工作 生活 世界 公司 市场 环境 "
            "能源 水 山 河 天气 音乐 电影 朋友 家庭 孩子 医院 医生 重要 可以 已经 因为 所以 但是 "
            "如果 非常 一些 没有 进行 提高 认为 知道 需要 开始 完成 的 了 在 是 和 有 也 都 就 不").split()

LANGUAGE_WEIGHTS: dict[str, float] = {"en": 0.70, "de": 0.08, "fr": 0.07, "es": 0.07,
                                      "ru": 0.05, "zh": 0.03}

BOILERPLATE_LINES = (
    "We use cookies to improve your experience. By continuing to browse you accept our use of cookies.",
    "Accept all cookies",
    "Cookie settings | Privacy policy | Terms of use",
    "Please enable JavaScript to view this page.",
    "javascript:void(0)",
    "This website requires JavaScript to function properly.",
    "Sign in | Register | Forgot your password?",
    "Share on Facebook Share on Twitter Share via Email",
    "All rights reserved. Copyright © 2024",
    "Subscribe to our newsletter",
    "Click here to read more",
    "Home > News > Archive",
    "Loading...",
)

LOREM = ("lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt "
         "ut labore et dolore magna aliqua ut enim ad minim veniam quis nostrud exercitation "
         "ullamco laboris nisi ut aliquip ex ea commodo consequat").split()

URL_HOSTS = ("example.com", "news.example.org", "shop.example.net", "blog.example.io",
             "wiki.example.edu", "cdn.example.com")


def words(lang: str) -> tuple[list[str], list[str]]:
    """(stop words, content words) for ``lang``."""
    return STOP_WORDS[lang].split(), CONTENT_WORDS[lang].split()
