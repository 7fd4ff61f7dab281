// UI text in Russian (the default: the dispatchers are in Moscow) and English.
// The dictionaries are plain JSON (ws/static/i18n/*.json) so a translator edits no code;
// tests/test_page_static.py checks that both hold the same keys.

export const LANGS = ["ru", "en"];
export const DEFAULT_LANG = "ru";
const STORE_KEY = "fleetwatch.lang";

const dicts = {};
let lang = DEFAULT_LANG;

export async function loadDictionaries(base) {
  await Promise.all(
    LANGS.map(async (l) => {
      const r = await fetch(`${base}/i18n/${l}.json`);
      if (!r.ok) throw new Error(`i18n/${l}.json: HTTP ${r.status}`);
      dicts[l] = await r.json();
    }),
  );
}

/** The language to start in: the dispatcher's last choice, else Russian. */
export function initialLang() {
  try {
    const saved = localStorage.getItem(STORE_KEY);
    if (LANGS.includes(saved)) return saved;
  } catch (_) {
    // storage blocked: fall back to the default
  }
  return DEFAULT_LANG;
}

export function setLang(l, { remember = true } = {}) {
  lang = LANGS.includes(l) ? l : DEFAULT_LANG;
  document.documentElement.lang = lang;
  if (remember) {
    try {
      localStorage.setItem(STORE_KEY, lang);
    } catch (_) {
      // not remembered: harmless
    }
  }
  return lang;
}

export function currentLang() {
  return lang;
}

/** The text for *key* with {name} placeholders filled; the key itself when missing, so a
 *  forgotten translation is visible instead of blank. */
export function t(key, params) {
  const d = dicts[lang] || {};
  let s = d[key] ?? dicts[DEFAULT_LANG]?.[key] ?? key;
  if (params) s = s.replace(/\{(\w+)\}/g, (m, k) => (k in params ? String(params[k]) : m));
  return s;
}

/** Fill every element marked data-i18n / data-i18n-placeholder / data-i18n-title. */
export function translateStatic(root = document) {
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll("[data-i18n-placeholder]")) {
    el.placeholder = t(el.dataset.i18nPlaceholder);
  }
  for (const el of root.querySelectorAll("[data-i18n-title]")) el.title = t(el.dataset.i18nTitle);
  document.title = t("title");
}
